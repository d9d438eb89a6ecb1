fn main() -> std::process::ExitCode {
    cjm_relay::main()
}
