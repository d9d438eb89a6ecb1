fn main() -> std::process::ExitCode {
    cjm_ctl::main()
}
