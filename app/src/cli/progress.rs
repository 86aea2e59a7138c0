//! Progress on stderr: loading a model, fetching one, and resolving `--model` to a path.

use crate::model_source::resolve_model;
use anyhow::{Context, Result};
use headwise_engine::Model;
use headwise_engine::device::ComputeDevice;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// A bar on stderr that counts to 1000 (a fraction in thousandths).
pub fn fraction_bar(message: String) -> ProgressBar {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:30}] {percent:>3}% {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// The model's path for `spec`, fetching it first (with a progress bar) if needed.
pub fn resolve_with_bar(spec: &str) -> Result<PathBuf> {
    let fetch_bar = fraction_bar(String::new());
    let path = resolve_model(spec, &|message, fraction| {
        fetch_bar.set_message(message.to_string());
        if let Some(f) = fraction {
            fetch_bar.set_position((f * 1000.0) as u64);
        }
    });
    fetch_bar.finish_and_clear();
    path
}

/// Resolves (fetching if needed) and loads a model with progress bars.
pub fn load_model(spec: &str, device: &ComputeDevice) -> Result<Model> {
    let path = resolve_with_bar(spec)?;
    let bar = fraction_bar(format!(
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

/// The process's peak resident memory so far, in bytes (Linux: `VmHWM` of /proc/self/status);
/// None where the system does not say.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// "peak memory 412 MiB", or nothing where the system does not say.
pub fn peak_memory_note() -> String {
    peak_memory().map_or_else(String::new, |bytes| {
        format!(", peak memory {} MiB", bytes >> 20)
    })
}

/// The last line of a command that wrote a session: where, on what device, and at what peak.
pub fn report_written(path: &std::path::Path, device: &ComputeDevice) {
    eprintln!(
        "wrote {} ({}{})",
        path.display(),
        device.description,
        peak_memory_note()
    );
}
