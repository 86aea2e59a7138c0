//! `headwise bench project`: the time to lay out a session's joint query-key embeddings, the
//! same call `headwise project` and the window make (gather, normalise, then PCA, UMAP or
//! t-SNE), timed over warm runs.

use super::bench::median;
use super::project::LayoutChoice;
use anyhow::{Result, bail};
use clap::Args;
use headwise_engine::analysis::projection::Work;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::host::HostTensor;
use headwise_engine::session::{LayerTensors, Session};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ProjectBench {
    /// A session whose inputs form the corpus (e.g. from `headwise trace --corpus`).
    #[arg(long)]
    pub session: PathBuf,
    #[command(flatten)]
    pub layout: LayoutChoice,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Lay out only the first N tokens of the corpus (N queries and N keys per head).
    #[arg(long)]
    pub tokens: Option<usize>,
}

/// The session cut to its first `tokens` tokens: whole inputs, the last one shortened.
fn first_tokens(session: &Session, tokens: usize) -> Result<Session> {
    let total = session.corpus_tokens();
    if tokens < 2 || tokens > total {
        bail!("--tokens {tokens}: the session has {total} tokens (at least 2 needed)");
    }
    let mut cut = session.clone();
    cut.meta.inputs.clear();
    cut.layers.clear();
    let mut left = tokens;
    for (info, layers) in session.meta.inputs.iter().zip(&session.layers) {
        if left == 0 {
            break;
        }
        let t = info.tokens.len();
        let keep = t.min(left);
        left -= keep;
        let mut info = info.clone();
        info.tokens.truncate(keep);
        info.token_ids.truncate(keep);
        let layers = layers
            .iter()
            .map(|l| LayerTensors {
                attn: l.attn.as_ref().map(|a| rows_and_columns(a, keep)),
                q: rows(&l.q, keep),
                k: rows(&l.k, keep),
                key_bias: None,
            })
            .collect();
        cut.meta.inputs.push(info);
        cut.layers.push(layers);
    }
    Ok(cut)
}

/// The first `keep` rows of each head of a [heads, T, d] tensor.
fn rows(t: &HostTensor, keep: usize) -> HostTensor {
    let [heads, len, d] = [t.shape[0], t.shape[1], t.shape[2]];
    let data = (0..heads)
        .flat_map(|h| t.data[h * len * d..(h * len + keep) * d].iter().copied())
        .collect();
    HostTensor::new(vec![heads, keep, d], data)
}

/// The first `keep` rows and columns of each head of a [heads, T, T] tensor.
fn rows_and_columns(t: &HostTensor, keep: usize) -> HostTensor {
    let [heads, len] = [t.shape[0], t.shape[1]];
    let data = (0..heads)
        .flat_map(|h| (0..keep).map(move |r| (h, r)))
        .flat_map(|(h, r)| {
            t.data[(h * len + r) * len..(h * len + r) * len + keep]
                .iter()
                .copied()
        })
        .collect();
    HostTensor::new(vec![heads, keep, keep], data)
}

pub fn project(args: ProjectBench) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let layout = &args.layout;
    let heads = layout.checked_heads()?;
    let original = Session::open(&args.session)?;
    let original = match args.tokens {
        Some(tokens) => first_tokens(&original, tokens)?,
        None => original,
    };
    let device = create_device(args.device)?;
    let count = layout.head_count(&original);
    let mut times = Vec::with_capacity(args.runs);
    // One unmeasured run warms the device (kernel compilation, allocations).
    for run in 0..=args.runs {
        let mut session = original.clone();
        let start = Instant::now();
        layout.project(&mut session, &heads, &device.device, &Work::silent())?;
        if run > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("run {run}: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    }
    let json = serde_json::json!({
        "bench": "project",
        "method": layout.method.name(),
        "dims": layout.dims,
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
