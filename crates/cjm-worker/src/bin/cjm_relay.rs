//! `cjm-relay`: see `cjm_worker::relay`.
fn main() -> std::process::ExitCode {
    cjm_worker::relay::relay_main()
}
