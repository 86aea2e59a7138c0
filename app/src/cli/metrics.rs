//! `headwise metrics`: every head's metrics and scores of a session, as the overview colours by
//! them, printed (each input's sink rate and the heads that score highest) and optionally
//! written as JSON; `--value-weighted` computes them on value-weighted attention, and
//! `--write-attention` writes the attention they were computed from, for other tools to check.

use crate::document::Document;
use crate::views::overview::{METRIC_NAMES, ranking};
use crate::views::shown_document;
use crate::views::state::ViewState;
use anyhow::{Context, Result, bail};
use clap::Args;
use headwise_engine::analysis::metrics::{HeadMetric, SINK_EPSILON, sink_rate};
use headwise_engine::atomic_file::write_atomically;
use headwise_engine::session::Session;
use headwise_engine::trace::{AttentionCapture, attention_bytes};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct MetricsArgs {
    pub session: PathBuf,
    /// Compute them on value-weighted attention (α_ij·|v_j| renormalised per row).
    #[arg(long)]
    pub value_weighted: bool,
    /// Write every head's metrics here as JSON: `inputs[i].metrics[name][layer][head]` and
    /// `inputs[i].sink_rate`.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the attention the metrics were computed from (value-weighted with
    /// --value-weighted) as `attn/{input}/{layer}` to this safetensors file; inputs whose
    /// attention exceeds 256 MiB are refused.
    #[arg(long)]
    pub write_attention: Option<PathBuf>,
    /// How many of the highest-scoring heads to print per metric.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

/// The metrics printed, besides the sink rate.
const PRINTED: [HeadMetric; 5] = [
    HeadMetric::FirstToken,
    HeadMetric::SecondarySink,
    HeadMetric::Dormancy,
    HeadMetric::Streaming,
    HeadMetric::Retrieval,
];

pub fn run(args: MetricsArgs) -> Result<()> {
    let session = Session::open(&args.session)?;
    let raw = Arc::new(Document::new(session));
    let state = ViewState {
        value_weighted: args.value_weighted,
        ..ViewState::default()
    };
    let doc = shown_document(&raw, &state).with_context(|| args.session.display().to_string())?;
    let metrics = doc.wait_for_metrics();
    let mut inputs = Vec::new();
    for (i, layers) in metrics.iter().enumerate() {
        let rate = sink_rate(layers);
        println!(
            "input {i} ({} tokens): sink rate {:.1}% (heads whose mean attention to the first \
             token exceeds ε = {SINK_EPSILON}){}",
            doc.tokens(i).len(),
            100.0 * rate,
            if args.value_weighted {
                ", value-weighted"
            } else {
                ""
            }
        );
        for metric in PRINTED {
            let ranked = ranking(&doc, i, metric);
            if ranked.is_empty() {
                continue;
            }
            let best: Vec<String> = ranked
                .iter()
                .take(args.top)
                .map(|(l, h, v)| format!("L{l}.H{h} {v:.3}"))
                .collect();
            println!("  {}: {}", metric.label(), best.join(", "));
        }
        let by_name: serde_json::Map<String, serde_json::Value> = METRIC_NAMES
            .iter()
            .map(|(name, metric)| {
                let grid: Vec<Vec<Option<f32>>> = layers
                    .iter()
                    .map(|heads| {
                        heads
                            .iter()
                            .map(|m| Some(m.get(*metric)).filter(|v| !v.is_nan()))
                            .collect()
                    })
                    .collect();
                (name.to_string(), serde_json::json!(grid))
            })
            .collect();
        inputs.push(serde_json::json!({"sink_rate": rate, "metrics": by_name}));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "value_weighted": args.value_weighted,
            "inputs": inputs,
        }))?;
        write_file(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.write_attention {
        write_attention(&doc.session, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Every layer's attention of every input, materialised from q, k and lse where it is not.
fn write_attention(session: &Session, path: &Path) -> Result<()> {
    let m = &session.meta.model;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, layers) in session.layers.iter().enumerate() {
        let t = session.meta.inputs[i].tokens.len();
        if attention_bytes(m.layers, m.heads, t) > AttentionCapture::DEFAULT_BUDGET {
            bail!("input {i}: {t} tokens is too long to write its attention whole");
        }
        for (l, layer) in layers.iter().enumerate() {
            let attn = match &layer.attn {
                Some(a) => a.clone(),
                None => {
                    let parts = session
                        .qk_parts(i, l)
                        .with_context(|| format!("input {i}, layer {l}: no attention"))?;
                    parts.attention().materialise()
                }
            };
            let bytes = attn.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((format!("attn/{i}/{l}"), attn.shape.clone(), bytes));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None)?;
    write_file(path, &bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| std::fs::write(tmp, bytes), |e| e)
        .with_context(|| format!("writing {}", path.display()))
}
