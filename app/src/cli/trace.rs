//! `headwise trace`: run a model on one or more texts or images and write a session file.

use super::progress::load_model;
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::imaging::load_image;
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::{LongInput, Model, PixelInput, TokenInput};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TraceArgs {
    /// A model folder, a .gguf or .onnx file, a fetched model's name (minilm, smollm2,
    /// dinov2-s) or a repo id.
    #[arg(long)]
    pub model: String,
    /// A text to run (repeat for several inputs).
    #[arg(long)]
    pub text: Vec<String>,
    /// A file with one input per line (empty lines are skipped).
    #[arg(long)]
    pub text_file: Option<PathBuf>,
    /// An image to run (PNG, JPEG or WebP; repeat for several inputs).
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// A folder: every PNG, JPEG and WebP in it, by name.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Where to write the session.
    #[arg(long, default_value = "session.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Precision of the stored tensors.
    #[arg(long, default_value = "f32")]
    pub dtype: StoreDtype,
    /// Keep the first tokens of a prompt longer than the model's positions instead of failing.
    #[arg(long)]
    pub truncate: bool,
}

/// The pictures in a folder, sorted by name.
fn images_in(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["png", "jpg", "jpeg", "webp"].contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("{}: no PNG, JPEG or WebP images", folder.display());
    }
    Ok(found)
}

fn run_images(args: &TraceArgs, model: &Model, session: &mut Session) -> Result<()> {
    let mut paths = args.image.clone();
    if let Some(folder) = &args.images {
        paths.extend(images_in(folder)?);
    }
    for (index, path) in paths.iter().enumerate() {
        let picture = load_image(path)?;
        let prepared = model
            .prepare_image(index, &picture)
            .with_context(|| format!("{}", path.display()))?;
        let trace = model
            .forward_image(&PixelInput::from(&prepared))
            .with_context(|| format!("running {}", path.display()))?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        session.push_image(model, &name, &prepared, &trace)?;
        eprintln!(
            "input {index}: {} ({}×{} px as the model sees it, {} tokens)",
            path.display(),
            prepared.view.width,
            prepared.view.height,
            session.meta.inputs[index].tokens.len()
        );
    }
    Ok(())
}

pub fn run(args: TraceArgs) -> Result<()> {
    let has_images = !args.image.is_empty() || args.images.is_some();
    let has_texts = !args.text.is_empty() || args.text_file.is_some();
    if has_images && has_texts {
        bail!("give either texts (--text, --text-file) or images (--image, --images), not both");
    }
    if has_images {
        let device = create_device(args.device)?;
        let model = load_model(&args.model, &device)?;
        let mut session = Session::new(&model, &args.model);
        run_images(&args, &model, &mut session)?;
        session.save(&args.out, args.dtype)?;
        eprintln!("wrote {} ({})", args.out.display(), device.description);
        return Ok(());
    }
    let mut texts = args.text.clone();
    if let Some(file) = &args.text_file {
        let content =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        texts.extend(
            content
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
        if texts.is_empty() {
            bail!(
                "{}: no inputs (the file has no non-empty lines)",
                file.display()
            );
        }
    }
    if texts.is_empty() {
        bail!("nothing to run: give --text, --text-file, --image or --images");
    }
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    let long = if args.truncate {
        LongInput::Truncate
    } else {
        LongInput::Reject
    };
    let mut session = Session::new(&model, &args.model);
    for (index, text) in texts.iter().enumerate() {
        let encoded = model.encode(index, text, long)?;
        let trace = model
            .forward(&TokenInput::from(&encoded))
            .with_context(|| format!("running input {index}"))?;
        session.push_text(&model, text, &encoded, &trace)?;
        eprintln!("input {index}: {} tokens", encoded.ids.len());
    }
    session.save(&args.out, args.dtype)?;
    eprintln!("wrote {} ({})", args.out.display(), device.description);
    Ok(())
}
