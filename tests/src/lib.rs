//! Fixtures of the end-to-end tests: the binaries under `src/bin` and nothing else.

// The README's Rust blocks, compiled (and, unless marked `no_run`, run) as doc tests.
// Blocks that show a file of the repository are checked against it instead
// (tests/tests/e2e/readme.rs).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
