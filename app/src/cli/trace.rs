//! `headwise trace`: run a model on one or more texts and write a session file.

use super::progress::load_model;
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::{LongInput, TokenInput};
use std::path::PathBuf;

#[derive(Args)]
pub struct TraceArgs {
    /// A model folder, a .gguf file, a fetched model's name (minilm, smollm2) or a repo id.
    #[arg(long)]
    pub model: String,
    /// A text to run (repeat for several inputs).
    #[arg(long)]
    pub text: Vec<String>,
    /// A file with one input per line (empty lines are skipped).
    #[arg(long)]
    pub text_file: Option<PathBuf>,
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

pub fn run(args: TraceArgs) -> Result<()> {
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
        bail!("nothing to run: give --text or --text-file");
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
