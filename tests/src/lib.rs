//! Fixtures of the end-to-end tests: the binaries under `src/bin` and nothing else.
