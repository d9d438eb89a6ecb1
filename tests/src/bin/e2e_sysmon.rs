fn main() -> std::process::ExitCode {
    cjm_sysmon::main()
}
