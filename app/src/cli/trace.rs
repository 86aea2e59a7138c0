//! `headwise trace`: run a model on one or more texts or images and write a session file.

use super::progress::{fraction_bar, load_model, report_written};
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::edits::Edit;
use headwise_engine::model::generation::Sampling;
use headwise_engine::model::gradients::TargetChoice;
use headwise_engine::pipeline::{
    self, Finished, Generation, Inputs, RunOptions, RunProgress, default_pack_tokens, images_in,
    text_lines,
};
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::{AttentionCapture, LongInput};
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
    /// A text file whose whole content is one input (a long document; repeat for several).
    /// For one input per line, use --corpus.
    #[arg(long)]
    pub text_file: Vec<PathBuf>,
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
    /// Whether each layer's [heads, T, T] attention is materialised and stored: `auto` while an
    /// input's attention over all layers fits 256 MiB, else only q, k and lse are kept (any
    /// weight is exact from them; memory grows with T, not T²); `full` always; `none` never.
    #[arg(long, default_value = "auto")]
    pub attention: AttentionCapture,
    /// Text inputs run packed into passes of up to this many tokens (1: one pass per input);
    /// each input's trace is the one it gets alone. Default: 1024 on a GPU, 1 on the CPU.
    #[arg(long)]
    pub pack_tokens: Option<usize>,
    /// An edit on the forward pass (repeat for several): `ablate:L.H` zeroes head H of layer
    /// L's output, `ablate-mean:L.H` replaces it by its mean over the tokens, `scale:L.H:K=F`
    /// multiplies every query's attention to key K by F (0 blocks it); L and H may be `*`.
    /// Each text is run as it is and again with the edits, the edited run stored after it.
    #[arg(long)]
    pub edit: Vec<Edit>,
    /// Decoders: continue each text by up to N tokens (stopping at end-of-text) before the
    /// trace, which then covers prompt and continuation; the session marks the generated
    /// tokens.
    #[arg(long)]
    pub generate: Option<usize>,
    /// With --generate: 0 (the default) picks the most likely token; above, samples from the
    /// softmax of the logits divided by it.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// With --generate and a temperature: the sampler's seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also compute gradients for every input (and edited run): each head's importance,
    /// ∂target/∂A ⊙ A for every head and the relevance map, stored with the target.
    #[arg(long)]
    pub gradients: bool,
    /// With --gradients: the target. Decoders: a token (its id, or a text that is exactly one
    /// token such as " Paris"); classifiers: a class (index or label); models without an
    /// output layer: the position of the token whose embedding the pooled output is dotted
    /// with. Default: the most likely token or class, the closest embedding.
    #[arg(long, requires = "gradients")]
    pub target: Option<String>,
}

/// Up to this many inputs, each finished one gets a line of its own above the bar.
const LINES_UP_TO: usize = 20;

/// One bar on stderr that moves layer by layer (and token by token while a text is continued),
/// with a line per finished input for a few inputs. indicatif hides the bar when stderr is not
/// a terminal; the lines stay.
struct InputProgress {
    bar: indicatif::ProgressBar,
    total: usize,
}

impl InputProgress {
    fn new(total: usize) -> Self {
        Self {
            bar: fraction_bar(format!("running {total} input{}", plural(total))),
            total,
        }
    }

    fn heard(&self, progress: &RunProgress, line: impl FnOnce(&Finished) -> String) {
        if let RunProgress::Finished(f) = progress {
            if self.total <= LINES_UP_TO {
                self.bar.suspend(|| eprintln!("{}", line(f)));
            }
        } else {
            self.bar.set_message(progress.to_string());
        }
        self.bar
            .set_position((progress.fraction() * 1000.0).round() as u64);
    }

    fn finish(&self, session: &Session) {
        self.bar.finish_and_clear();
        if self.total > LINES_UP_TO {
            eprintln!("{} inputs, {} tokens", self.total, session.corpus_tokens());
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The inputs the arguments name: pictures for an image model, else texts (a text file is one
/// input; a corpus file's inputs are its trimmed non-empty lines, as the window reads a corpus).
fn inputs(args: &TraceArgs) -> Result<Inputs> {
    let corpus_is_images = args.corpus.as_ref().is_some_and(|c| c.is_dir());
    let corpus_is_text = args.corpus.is_some() && !corpus_is_images;
    let has_images = !args.image.is_empty() || args.images.is_some() || corpus_is_images;
    let has_texts = !args.text.is_empty() || !args.text_file.is_empty() || corpus_is_text;
    if has_images && has_texts {
        bail!("give either texts (--text, --text-file) or images (--image, --images), not both");
    }
    if has_images {
        let mut paths = args.image.clone();
        for folder in args.images.iter().chain(args.corpus.iter()) {
            paths.extend(images_in(folder)?);
        }
        return Ok(Inputs::Images(paths));
    }
    let mut texts = args.text.clone();
    let read = |file: &PathBuf| {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    };
    for file in &args.text_file {
        let content = read(file)?;
        if content.trim().is_empty() {
            bail!("{}: the file is empty", file.display());
        }
        texts.push(content);
    }
    for file in args.corpus.iter() {
        let lines = text_lines(&read(file)?, usize::MAX);
        if lines.is_empty() {
            bail!(
                "{}: no inputs (the file has no non-empty lines)",
                file.display()
            );
        }
        texts.extend(lines);
    }
    if texts.is_empty() {
        bail!("nothing to run: give --text, --text-file, --image, --images or --corpus");
    }
    Ok(Inputs::Texts(texts))
}

pub fn run(args: TraceArgs) -> Result<()> {
    let inputs = inputs(&args)?;
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    let gradients = match (&args.gradients, &args.target) {
        (false, _) => None,
        (true, None) => Some(TargetChoice::Top),
        (true, Some(spec)) => Some(
            model
                .target_choice(spec)
                .with_context(|| format!("--target {spec}"))?,
        ),
    };
    let options = RunOptions {
        long: if args.truncate {
            LongInput::Truncate
        } else {
            LongInput::Reject
        },
        pack_tokens: args
            .pack_tokens
            .unwrap_or_else(|| default_pack_tokens(device.is_gpu)),
        keep_traces: false,
        capture: args.attention,
        edits: args.edit.clone(),
        generate: args.generate.map(|new_tokens| Generation {
            new_tokens,
            sampling: Sampling {
                temperature: args.temperature,
                seed: args.seed,
            },
        }),
        gradients,
    };
    let progress = InputProgress::new(inputs.len());
    let run = pipeline::run(&model, &args.model, &inputs, &options, &mut |p| {
        progress.heard(p, |f| describe(&inputs, f));
        true
    })?;
    progress.finish(&run.session);
    run.session.save(&args.out, args.dtype)?;
    report_written(&args.out, &device);
    Ok(())
}

/// The line a finished input gets when there are few.
fn describe(inputs: &Inputs, f: &Finished) -> String {
    match (inputs, f.picture) {
        (Inputs::Images(paths), Some([width, height])) => format!(
            "input {}: {} ({width}×{height} px as the model sees it, {} tokens)",
            f.index,
            paths[f.index].display(),
            f.tokens
        ),
        _ => format!("input {}: {} tokens", f.index, f.tokens),
    }
}
