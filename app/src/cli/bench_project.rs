//! `headwise bench project`: the time to lay out a session's joint query-key embeddings, the
//! same call `headwise project` and the window make (gather, normalise, then PCA, UMAP or
//! t-SNE), timed over warm runs.

use super::bench::median;
use super::project::parse_head;
use anyhow::{Result, bail};
use clap::Args;
use headwise_engine::analysis::projection::{Method, Work, project_session};
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::session::Session;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ProjectBench {
    /// A session whose inputs form the corpus (e.g. from `headwise trace --corpus`).
    #[arg(long)]
    pub session: PathBuf,
    #[arg(long, default_value = "pca")]
    pub method: Method,
    #[arg(long, default_value_t = 2)]
    pub dims: usize,
    /// LAYER.HEAD, comma-separated (default: every head).
    #[arg(long, value_delimiter = ',')]
    pub heads: Vec<String>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn project(args: ProjectBench) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let heads = args
        .heads
        .iter()
        .map(|s| parse_head(s))
        .collect::<Result<Vec<_>>>()?;
    let original = Session::open(&args.session)?;
    let device = create_device(args.device)?;
    let count = if heads.is_empty() {
        original.meta.model.layers * original.meta.model.heads
    } else {
        heads.len()
    };
    let mut times = Vec::with_capacity(args.runs);
    // One unmeasured run warms the device (kernel compilation, allocations).
    for run in 0..=args.runs {
        let mut session = original.clone();
        let start = Instant::now();
        project_session(
            &mut session,
            args.method,
            args.dims,
            args.seed,
            &heads,
            &device.device,
            &Work::silent(),
        )?;
        if run > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("run {run}: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    }
    let json = serde_json::json!({
        "bench": "project",
        "method": args.method.name(),
        "dims": args.dims,
        "heads": count,
        "tokens": original.corpus_tokens(),
        "points_per_head": 2 * original.corpus_tokens(),
        "device": device.description,
        "runs": args.runs,
        "median_ms": median(&mut times),
        "min_ms": times[0],
    });
    println!("{json}");
    Ok(())
}
