#![allow(clippy::print_stdout)] // a program that prints its results

use cjm_manager::{CallArgs, ManagerOptions, PluginManager};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manager = PluginManager::new(ManagerOptions::from_env()?); // CJM_HOME or ~/.cjm
    manager.discover_manifests();
    manager.load_plugin("cjm-greeter", None).await?; // on its schema's defaults

    let greeting = manager
        .execute_plugin("cjm-greeter", CallArgs::new().arg("world"))
        .await?;
    println!("{greeting}"); // {"text":"hello, world"}

    // Partial: merged over the configuration in force, checked against the schema.
    let update = serde_json::json!({"repeat": 2, "style": "upper"});
    let update = update.as_object().cloned().unwrap_or_default();
    manager.update_plugin_config("cjm-greeter", update).await?;
    let mut chunks = manager
        .execute_plugin_stream("cjm-greeter", CallArgs::new().kwarg("who", "Ada"))
        .await?;
    while let Some(chunk) = chunks.next().await {
        println!("{}", chunk?); // {"n":0,"text":"HELLO, Ada"}, then n = 1
    }

    // A file-backed argument: written to a temporary file, only its path travels.
    manager.load_plugin("cjm-wordcount", None).await?;
    let counted = manager
        .execute_plugin(
            "cjm-wordcount",
            CallArgs::new().file_arg(String::from("a b c")),
        )
        .await?;
    println!("{}", counted["words"]); // 3

    manager.shutdown().await; // dropping the manager also stops every worker
    Ok(())
}
