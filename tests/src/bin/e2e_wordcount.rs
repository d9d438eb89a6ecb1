fn main() -> std::process::ExitCode {
    cjm_wordcount::main()
}
