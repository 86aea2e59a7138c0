//! `headwise bench render` and `headwise bench open`: the app's figures. They run on synthetic
//! sessions of the requested shape (random attention rows that sum to one), since what is timed
//! is drawing and reading, not the numbers.

use super::bench::median;
use crate::document::Document;
use crate::render::offscreen::Offscreen;
use crate::views::draw;
use crate::views::state::{Tab, ViewState};
use anyhow::{Context, Result, bail};
use clap::Args;
use eframe::egui;
use headwise_engine::analysis::projection::Method;
use headwise_engine::device::shared_wgpu_setup;
use headwise_engine::host::HostTensor;
use headwise_engine::session::{
    FORMAT_VERSION, InputInfo, InputKind, LayerTensors, ModelInfo, Session, SessionMeta, StoreDtype,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct RenderBench {
    /// overview, head, qk (one head's query-key scatter) or qk-matrix (every head's)
    #[arg(long, default_value = "overview")]
    pub view: String,
    /// qk views: points per head (queries and keys together).
    #[arg(long, default_value_t = 1_000_000)]
    pub points: usize,
    #[arg(long, default_value_t = 12)]
    pub layers: usize,
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    #[arg(long, default_value_t = 512)]
    pub tokens: usize,
    #[arg(long, default_value_t = 20)]
    pub frames: usize,
    /// Canvas size in pixels (square).
    #[arg(long, default_value_t = 1200.0)]
    pub size: f32,
}

#[derive(Args)]
pub struct OpenBench {
    /// Approximate size of the session file to write and open, in MB.
    #[arg(long, default_value_t = 1000)]
    pub megabytes: usize,
    /// Where to write it (default: a temporary file, removed afterwards).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Reproducible pseudo-random numbers in [0, 1) without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A session of `layers` x `heads` with `tokens` tokens and random rows that sum to one.
pub fn synthetic_session(layers: usize, heads: usize, tokens: usize, head_dim: usize) -> Session {
    let mut rng = Lcg(42);
    let layer = |rng: &mut Lcg| {
        let mut attn = Vec::with_capacity(heads * tokens * tokens);
        for _ in 0..heads * tokens {
            let row: Vec<f32> = (0..tokens).map(|_| rng.next().powi(8)).collect();
            let sum: f32 = row.iter().sum::<f32>().max(1e-12);
            attn.extend(row.iter().map(|v| v / sum));
        }
        let qk = |n: usize, rng: &mut Lcg| {
            HostTensor::new(
                vec![n, tokens, head_dim],
                (0..n * tokens * head_dim)
                    .map(|_| rng.next() - 0.5)
                    .collect(),
            )
        };
        LayerTensors {
            attn: Some(HostTensor::new(vec![heads, tokens, tokens], attn)),
            q: qk(heads, rng),
            k: qk(heads, rng),
            key_bias: None,
        }
    };
    let layers_data = (0..layers).map(|_| layer(&mut rng)).collect();
    Session {
        meta: SessionMeta {
            format_version: FORMAT_VERSION,
            model: ModelInfo {
                source: "synthetic".into(),
                model_type: "synthetic".into(),
                layers,
                heads,
                kv_heads: heads,
                head_dim,
                attention: Vec::new(),
                causal: Vec::new(),
            },
            inputs: vec![InputInfo {
                kind: InputKind::Text,
                text: Some("synthetic".into()),
                image: None,
                tokens: (0..tokens).map(|i| format!("t{i}")).collect(),
                token_ids: (0..tokens as u32).collect(),
                patch_grid: None,
                prefix_tokens: None,
                patch_size: None,
                next_tokens: Vec::new(),
                special_tokens: Vec::new(),
                probe: None,
                edits: Vec::new(),
                base: None,
                generated: None,
                target: None,
                model: None,
            }],
            view: serde_json::Value::Null,
            projections: BTreeMap::new(),
        },
        layers: vec![layers_data],
        extras: BTreeMap::new(),
        dtype: Default::default(),
    }
}

/// Tokens per input of the synthetic corpus behind the qk benchmarks.
const CORPUS_INPUT_TOKENS: usize = 25;

/// A synthetic corpus of `points / 2` tokens with a PCA layout per head: blobs of points, as a
/// real layout has clusters, drawn from a fixed seed.
fn synthetic_corpus(layers: usize, heads: usize, points: usize) -> Session {
    let tokens = (points / 2).max(CORPUS_INPUT_TOKENS);
    let inputs = tokens.div_ceil(CORPUS_INPUT_TOKENS);
    let one = synthetic_session(layers, heads, CORPUS_INPUT_TOKENS, 8);
    let mut session = one.clone();
    for _ in 1..inputs {
        session.meta.inputs.push(one.meta.inputs[0].clone());
        session.layers.push(one.layers[0].clone());
    }
    let n = 2 * inputs * CORPUS_INPUT_TOKENS;
    let mut rng = Lcg(7);
    for layer in 0..layers {
        for head in 0..heads {
            let centres: Vec<[f32; 2]> = (0..12)
                .map(|_| [rng.next() * 20.0 - 10.0, rng.next() * 20.0 - 10.0])
                .collect();
            let mut layout = Vec::with_capacity(2 * n);
            for i in 0..n {
                let c = centres[i % centres.len()];
                let spread = 1.0 + (i % 5) as f32 * 0.4;
                layout.push(c[0] + (rng.next() - 0.5) * spread * 2.0);
                layout.push(c[1] + (rng.next() - 0.5) * spread * 2.0);
            }
            session.set_projection(Method::Pca, layer, head, 2, &layout);
        }
    }
    session
}

pub fn render(args: RenderBench) -> Result<()> {
    let tab = match args.view.as_str() {
        "overview" => Tab::Overview,
        "head" => Tab::Head,
        "qk" | "qk-matrix" => Tab::Qk,
        other => bail!("--view {other}: overview, head, qk or qk-matrix"),
    };
    if args.layers == 0 || args.heads == 0 || args.tokens == 0 || args.frames == 0 {
        bail!("--layers, --heads, --tokens and --frames must be at least 1");
    }
    let setup = shared_wgpu_setup().context("no wgpu adapter to draw with")?;
    let adapter = setup.adapter.get_info();
    // The head view and the single query-key view need one head only; the grids every head.
    let single_qk = args.view == "qk";
    let layers = if tab == Tab::Head || single_qk {
        1
    } else {
        args.layers
    };
    let heads = if single_qk { 1 } else { args.heads };
    let session = if tab == Tab::Qk {
        synthetic_corpus(layers, heads, args.points)
    } else {
        synthetic_session(layers, heads, args.tokens, 8)
    };
    let points = 2 * session.corpus_tokens();
    let doc = Arc::new(Document::new(session));
    let mut offscreen = Offscreen::new(setup.device, setup.queue, egui::Visuals::dark());
    let mut state = ViewState {
        tab,
        ..Default::default()
    };
    state.qk.single = single_qk;
    let size = egui::vec2(args.size, args.size);
    let first = Instant::now();
    offscreen.frame(size, 1.0, |ui| draw(ui, &doc, &mut state))?;
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(args.frames);
    for _ in 0..args.frames {
        let start = Instant::now();
        offscreen.frame(size, 1.0, |ui| draw(ui, &doc, &mut state))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let json = serde_json::json!({
        "bench": "render",
        "view": args.view,
        "layers": layers,
        "heads": heads,
        "tokens": if tab == Tab::Qk { points / 2 } else { args.tokens },
        "points_per_head": if tab == Tab::Qk { Some(points) } else { None },
        "pixels": [args.size, args.size],
        "adapter": format!("{} ({:?}, {:?})", adapter.name, adapter.backend, adapter.device_type),
        "frames": args.frames,
        "first_frame_ms": first_ms,
        "median_ms": median(&mut times),
        "min_ms": times[0],
        "max_ms": times[times.len() - 1],
    });
    println!("{json}");
    Ok(())
}

pub fn open(args: OpenBench) -> Result<()> {
    if args.megabytes == 0 || args.runs == 0 {
        bail!("--megabytes and --runs must be at least 1");
    }
    // MiniLM-like layers (12 heads, d = 32) at 512 tokens: about 13.4 MB per layer in f32.
    let (heads, tokens, head_dim) = (12usize, 512usize, 32usize);
    let per_layer = 4 * heads * tokens * (tokens + 2 * head_dim);
    let layers = (args.megabytes * 1_000_000).div_ceil(per_layer);
    let path = args.file.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("headwise-bench-{}.safetensors", std::process::id()))
    });
    synthetic_session(layers, heads, tokens, head_dim).save(&path, StoreDtype::F32)?;
    let bytes = std::fs::metadata(&path)?.len();
    let mut times = Vec::with_capacity(args.runs);
    let mut metrics_times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        // Ready to draw: the window's first frame needs no more. The head metrics follow on
        // a thread of their own; their time is counted from the same start.
        let start = Instant::now();
        let doc = Document::new(Session::open(&path)?);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        doc.wait_for_metrics();
        metrics_times.push(start.elapsed().as_secs_f64() * 1e3);
        drop(doc);
    }
    if args.file.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    let json = serde_json::json!({
        "bench": "open",
        "bytes": bytes,
        "layers": layers,
        "heads": heads,
        "tokens": tokens,
        "runs": args.runs,
        "median_ms": median(&mut times),
        "min_ms": times[0],
        "with_metrics_median_ms": median(&mut metrics_times),
    });
    println!("{json}");
    Ok(())
}
