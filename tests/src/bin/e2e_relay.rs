fn main() -> std::process::ExitCode {
    cjm_worker::relay::relay_main()
}
