//! `headwise trace`: run a model on one or more texts or images and write a session file.

use super::progress::{fraction_bar, load_model};
use crate::corpus::images_in;
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::imaging::load_image;
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::{LongInput, Model, PixelInput, TokenInput};
use std::path::PathBuf;

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
    /// A corpus for the query-key view: a text file (one input per line) or a folder of
    /// images.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
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
    /// Text inputs run packed into passes of up to this many tokens (1: one pass per input);
    /// each input's trace is the one it gets alone. Default: 1024 on a GPU, 1 on the CPU.
    #[arg(long)]
    pub pack_tokens: Option<usize>,
}

/// One pass per input on the CPU, where a pass costs about the same per token at any length;
/// packed passes on a GPU, where many short passes leave it idle.
pub fn default_pack_tokens(is_gpu: bool) -> usize {
    if is_gpu { 1024 } else { 1 }
}

/// Above this many inputs a progress bar replaces the line per input.
const LINES_UP_TO: usize = 20;

/// Reports each input on its own line for a few inputs, as a progress bar for a corpus.
struct InputProgress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
}

impl InputProgress {
    fn new(total: usize) -> Self {
        let bar = (total > LINES_UP_TO).then(|| {
            let bar = fraction_bar(format!("running {total} inputs"));
            bar.set_length(total as u64);
            bar
        });
        Self { bar, total }
    }

    fn done(&self, index: usize, line: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => bar.set_position(index as u64 + 1),
            None => eprintln!("{}", line()),
        }
    }

    fn finish(&self, session: &Session) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            eprintln!("{} inputs, {} tokens", self.total, session.corpus_tokens());
        }
    }
}

fn run_images(args: &TraceArgs, model: &Model, session: &mut Session) -> Result<()> {
    let mut paths = args.image.clone();
    if let Some(folder) = &args.images {
        paths.extend(images_in(folder)?);
    }
    if let Some(folder) = args.corpus.as_ref().filter(|c| c.is_dir()) {
        paths.extend(images_in(folder)?);
    }
    let progress = InputProgress::new(paths.len());
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
        progress.done(index, || {
            format!(
                "input {index}: {} ({}×{} px as the model sees it, {} tokens)",
                path.display(),
                prepared.view.width,
                prepared.view.height,
                session.meta.inputs[index].tokens.len()
            )
        });
    }
    progress.finish(session);
    Ok(())
}

pub fn run(args: TraceArgs) -> Result<()> {
    let corpus_is_images = args.corpus.as_ref().is_some_and(|c| c.is_dir());
    let corpus_is_text = args.corpus.is_some() && !corpus_is_images;
    let has_images = !args.image.is_empty() || args.images.is_some() || corpus_is_images;
    let has_texts = !args.text.is_empty() || args.text_file.is_some() || corpus_is_text;
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
    let files = args.text_file.iter().chain(args.corpus.iter());
    for file in files {
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
        bail!("nothing to run: give --text, --text-file, --image, --images or --corpus");
    }
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    let long = if args.truncate {
        LongInput::Truncate
    } else {
        LongInput::Reject
    };
    let mut session = Session::new(&model, &args.model);
    let progress = InputProgress::new(texts.len());
    let encoded = model.encode_all(&texts, long)?;
    let inputs: Vec<TokenInput> = encoded.iter().map(TokenInput::from).collect();
    let pack = args
        .pack_tokens
        .unwrap_or_else(|| default_pack_tokens(device.is_gpu));
    let mut finished = 0;
    let traces = model
        .forward_many(&inputs, pack, &mut |done| {
            for (index, input) in encoded.iter().enumerate().take(done).skip(finished) {
                progress.done(index, || {
                    format!("input {index}: {} tokens", input.ids.len())
                });
            }
            finished = done;
            true
        })
        .context("running the inputs")?;
    for ((text, encoded), trace) in texts.iter().zip(&encoded).zip(&traces) {
        session.push_text(&model, text, encoded, trace)?;
    }
    progress.finish(&session);
    session.save(&args.out, args.dtype)?;
    eprintln!("wrote {} ({})", args.out.display(), device.description);
    Ok(())
}
