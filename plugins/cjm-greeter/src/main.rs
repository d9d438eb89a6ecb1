fn main() -> std::process::ExitCode {
    let about = cjm_worker::About::new().description("Greets whoever it is given");
    cjm_worker::main(about, |_plugin_args| Ok(cjm_greeter::Greeter::default()))
}
