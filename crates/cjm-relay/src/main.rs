//! `cjm-relay`: see the crate's documentation (`src/lib.rs`).
fn main() -> std::process::ExitCode {
    cjm_relay::main()
}
