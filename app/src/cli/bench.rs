//! `headwise bench`: time warm forward passes with capture (`trace`), frames of the views drawn
//! offscreen (`render`), opening a large session (`open`) and laying out query-key embeddings
//! (`project`), generation, gradient runs and edits redrawn (`edit`); each prints one JSON
//! object.

use super::progress::load_model;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use headwise_engine::device::{ComputeDevice, DeviceChoice, create_device};
use headwise_engine::imaging::preprocess::ResizeTo;
use headwise_engine::imaging::resample::Filter;
use headwise_engine::imaging::{ImageProcessor, decode_image};
use headwise_engine::model::Preprocessor;
use headwise_engine::{AttentionCapture, Model, PixelInput, TokenInput};
use std::path::Path;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Forward pass + capture of every layer's attention, q and k at a given length.
    Trace(TraceBench),
    /// Frame time of a view, drawn offscreen by the window's code and shaders.
    Render(super::bench_views::RenderBench),
    /// Time to open a session file of a given size and make it ready to draw.
    Open(super::bench_views::OpenBench),
    /// Time to lay out a session's joint query-key embeddings (PCA, UMAP, t-SNE).
    Project(super::bench_project::ProjectBench),
    /// Greedy generation speed in new tokens per second (decoders).
    Generate(GenerateBench),
    /// Time for one gradient run: head importance, ∂target/∂A ⊙ A and the relevance map.
    Gradients(GradientsBench),
    /// Time from an edit to the redrawn comparison (the edited run and the change overview).
    Edit(super::bench_edit::EditBench),
}

/// The model a bench times and the input it gives it.
#[derive(Args)]
pub struct ModelAndInput {
    #[arg(long)]
    pub model: String,
    /// Text models: the number of tokens.
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// Image models: the side of the square picture in pixels (a sample photograph resized).
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// A loaded bench model with its input, and how long loading took.
struct Loaded {
    device: ComputeDevice,
    model: Model,
    input: BenchInput,
    load_ms: f64,
}

impl ModelAndInput {
    fn load(&self, runs: usize) -> Result<Loaded> {
        if self.tokens == 0 || runs == 0 {
            bail!("--tokens and --runs must be at least 1");
        }
        let device = create_device(self.device)?;
        let load_start = Instant::now();
        let model = load_model(&self.model, &device)?;
        let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
        let input = if model.takes_images() {
            bench_picture(&model, self.image_size)?
        } else {
            text_input(&model, self.tokens)?
        };
        Ok(Loaded {
            device,
            model,
            input,
            load_ms,
        })
    }
}

#[derive(Args)]
pub struct GradientsBench {
    #[command(flatten)]
    pub on: ModelAndInput,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Args)]
pub struct GenerateBench {
    #[arg(long)]
    pub model: String,
    /// The prompt.
    #[arg(long, default_value = "The capital of France is")]
    pub prompt: String,
    /// New tokens per run (fewer if the model ends the text).
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Args)]
pub struct TraceBench {
    #[command(flatten)]
    pub on: ModelAndInput,
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// As `trace --attention`: materialise each layer's attention (`full`), keep q, k and lse
    /// only (`none`), or materialise while it fits 256 MiB (`auto`).
    #[arg(long, default_value = "full")]
    pub attention: AttentionCapture,
}

/// Public-domain prose (the opening of Melville's *Moby-Dick*), repeated to any length, so that
/// the tokens are real text rather than one id repeated.
pub const TEXT: &str = "Call me Ishmael. Some years ago, never mind how long precisely, having little or no \
money in my purse, and nothing particular to interest me on shore, I thought I would sail about a \
little and see the watery part of the world. It is a way I have of driving off the spleen and \
regulating the circulation. Whenever I find myself growing grim about the mouth; whenever it is a \
damp, drizzly November in my soul; whenever I find myself involuntarily pausing before coffin \
warehouses, and bringing up the rear of every funeral I meet; then, I account it high time to get \
to sea as soon as I can. ";

/// A real photograph for image models (CC0; see assets/SOURCES.md).
const PICTURE: &[u8] = include_bytes!("../../../assets/chelsea.png");

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Trace(args) => trace(args),
        BenchCommand::Render(args) => super::bench_views::render(args),
        BenchCommand::Open(args) => super::bench_views::open(args),
        BenchCommand::Project(args) => super::bench_project::project(args),
        BenchCommand::Generate(args) => generate(args),
        BenchCommand::Gradients(args) => gradients(args),
        BenchCommand::Edit(args) => super::bench_edit::edit(args),
    }
}

/// Gradient runs for the most likely target, warm, timed: the median's seconds.
fn gradients(args: GradientsBench) -> Result<()> {
    let Loaded {
        device,
        model,
        input,
        ..
    } = args.on.load(args.runs)?;
    let choice = headwise_engine::model::gradients::TargetChoice::Top;
    let once = || -> Result<f64> {
        let start = Instant::now();
        match &input {
            BenchInput::Tokens(tokens) => model.text_gradients(tokens, &[], choice)?,
            BenchInput::Pixels(pixels) => model.image_gradients(pixels, choice)?,
        };
        Ok(start.elapsed().as_secs_f64())
    };
    once()?;
    let mut times = (0..args.runs).map(|_| once()).collect::<Result<Vec<_>>>()?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "gradients",
            "model": args.on.model,
            "device": device.description,
            "tokens": input.tokens(&model),
            "runs": times.len(),
            "seconds": median(&mut times),
        })
    );
    Ok(())
}

/// Greedy continuations of the prompt, warm, timed: the median run's new tokens per second.
fn generate(args: GenerateBench) -> Result<()> {
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    let prompt = model.encode(0, &args.prompt, headwise_engine::LongInput::Reject)?;
    let never = std::sync::atomic::AtomicBool::new(false);
    let sampling = headwise_engine::model::generation::Sampling::default();
    let once = || model.generate(&prompt.ids, args.tokens, sampling, &never, &mut |_| {});
    once()?;
    let mut rates = Vec::new();
    let mut new_tokens = 0;
    for _ in 0..args.runs.max(1) {
        let start = Instant::now();
        new_tokens = once()?.len();
        rates.push(new_tokens as f64 / start.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "generate",
            "model": args.model,
            "device": device.description,
            "prompt_tokens": prompt.ids.len(),
            "new_tokens": new_tokens,
            "kv_cache": model.generates_with_cache(prompt.ids.len() + args.tokens),
            "runs": rates.len(),
            "tokens_per_s": median(&mut rates),
        })
    );
    Ok(())
}

/// The median of some timings (sorts them).
pub fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// One forward pass of either kind, so text and image models are timed the same way.
enum BenchInput {
    Tokens(TokenInput),
    Pixels(PixelInput),
}

impl BenchInput {
    fn run(
        &self,
        model: &Model,
        capture: AttentionCapture,
    ) -> headwise_engine::Result<headwise_engine::Trace> {
        match self {
            Self::Tokens(input) => model.forward_with(input, capture),
            Self::Pixels(input) => model.forward_image(input),
        }
    }

    fn tokens(&self, model: &Model) -> usize {
        match self {
            Self::Tokens(input) => input.ids.len(),
            Self::Pixels(input) => model
                .patch_layout(input.height, input.width)
                .map_or(0, |([rows, cols], prefix)| rows * cols + prefix),
        }
    }
}

/// The sample photograph resized (bicubic) to `size` × `size` and normalised as the model's
/// preprocessor does.
fn bench_picture(model: &Model, size: usize) -> Result<BenchInput> {
    if size == 0 {
        bail!("--image-size must be at least 1");
    }
    let Preprocessor::Image(processor) = &model.preprocessor else {
        bail!("not an image model");
    };
    let picture = decode_image(PICTURE, Path::new("assets/chelsea.png"))?;
    let square = ImageProcessor {
        resize: Some((
            ResizeTo::Exact {
                height: size,
                width: size,
            },
            Filter::Bicubic,
        )),
        crop: None,
        ..processor.clone()
    };
    Ok(BenchInput::Pixels(PixelInput::from(
        &square.prepare(&picture),
    )))
}

fn text_input(model: &Model, tokens: usize) -> Result<BenchInput> {
    if tokens > model.config.max_positions {
        bail!(
            "--tokens {tokens} exceeds the model's {} positions",
            model.config.max_positions
        );
    }
    let mut text = String::new();
    let encoded = loop {
        text.push_str(TEXT);
        let e = model.tokenizer()?.encode(&text)?;
        if e.ids.len() >= tokens {
            break e;
        }
    };
    Ok(BenchInput::Tokens(TokenInput {
        ids: encoded.ids[..tokens].to_vec(),
        type_ids: encoded.type_ids[..tokens].to_vec(),
        key_valid: None,
    }))
}

fn trace(args: TraceBench) -> Result<()> {
    let Loaded {
        device,
        model,
        input,
        load_ms,
    } = args.on.load(args.runs)?;
    let run_once = || -> Result<f64> {
        let start = Instant::now();
        let trace = input.run(&model, args.attention)?;
        device.device.sync().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        drop(trace);
        Ok(elapsed)
    };
    run_once()?; // warm-up: kernel compilation, autotune, allocator pools
    let mut times = (0..args.runs)
        .map(|_| run_once())
        .collect::<Result<Vec<_>>>()?;
    let median = median(&mut times);
    let json = serde_json::json!({
        "bench": "trace",
        "model": args.on.model,
        "model_type": model.config.model_type,
        "tokens": input.tokens(&model),
        "image_size": model.takes_images().then_some(args.on.image_size),
        "device": device.description,
        "runs": args.runs,
        "median_ms": median,
        "min_ms": times[0],
        "max_ms": times[times.len() - 1],
        "load_ms": load_ms,
        "attention": format!("{:?}", args.attention),
        "peak_memory_bytes": super::progress::peak_memory(),
    });
    println!("{json}");
    Ok(())
}
