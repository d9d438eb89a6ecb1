fn main() -> std::process::ExitCode {
    cjm_echo::main()
}
