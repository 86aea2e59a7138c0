//! Every head's metrics (entropy, distances, shares), `[input][layer][head]`, worked out once per
//! document: at once for small sessions, in a job for large ones so the first frame does not
//! wait (about 0.1 s per 100 MB of attention on 2 cores). Inputs whose attention is not
//! materialised (long inputs) get theirs from q, k and lse a row at a time, and in the same pass
//! each head's overview thumbnail (block maxima), so the overview never holds a T × T matrix.
//! The job cannot stop half-way; it ends with its document.

use super::lock;
use crate::document::{Document, thumbnail_side};
use crate::jobs::{Job, Repaint};
use headwise_engine::analysis::metrics::{
    HeadMetric, HeadMetrics, HeadSummary, LayerContext, layer_summaries, layer_summaries_from_qk,
};
use headwise_engine::analysis::retrieval::retrieval_scores;
use headwise_engine::model::key_mask::KeyMask;
use headwise_engine::session::Session;
use headwise_engine::trace::attention_bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Every head's metrics, `[input][layer][head]`.
pub type Metrics = Vec<Vec<Vec<HeadMetrics>>>;

/// Thumbnails of heads whose attention is not materialised, by (input, layer, head).
type Thumbnails = HashMap<(usize, usize, usize), Arc<Vec<f32>>>;

/// The mean attention each token receives over queries and heads, by (input, layer).
type Received = HashMap<(usize, usize), Arc<Vec<f32>>>;

/// What one pass over the session gives.
struct Summaries {
    metrics: Metrics,
    thumbnails: Thumbnails,
    received: Received,
}

/// Sessions with more attention than this get their head metrics in the background.
const IN_BACKGROUND_ABOVE_BYTES: u64 = 128 << 20;

#[derive(Default)]
pub struct MetricsCache {
    value: OnceLock<Summaries>,
    job: Mutex<Option<Job<()>>>,
}

impl MetricsCache {
    /// Fills the cache at once for a session small enough that this costs no noticeable time.
    pub fn fill_if_small(&self, session: &Session, special: &[Vec<bool>]) {
        let m = &session.meta.model;
        let bytes: u64 = session
            .meta
            .inputs
            .iter()
            .map(|i| attention_bytes(m.layers, m.heads, i.tokens.len()))
            .sum();
        if bytes <= IN_BACKGROUND_ABOVE_BYTES {
            let _ = self.value.set(all_metrics(session, special));
        }
    }

    /// The metrics if they are worked out yet.
    pub fn get(&self) -> Option<&Metrics> {
        self.value.get().map(|s| &s.metrics)
    }

    /// The overview thumbnail of a head whose attention is not materialised, once worked out.
    pub fn thumbnail(&self, input: usize, layer: usize, head: usize) -> Option<Arc<Vec<f32>>> {
        self.value
            .get()?
            .thumbnails
            .get(&(input, layer, head))
            .cloned()
    }

    /// The mean attention each token of `input` receives in `layer`, over queries and heads
    /// ([T]), once worked out.
    pub fn received(&self, input: usize, layer: usize) -> Option<Arc<Vec<f32>>> {
        self.value.get()?.received.get(&(input, layer)).cloned()
    }

    /// The metrics, working them out first (or waiting for the job that does).
    pub fn wait(&self, session: &Session, special: &[Vec<bool>]) -> &Metrics {
        &self
            .value
            .get_or_init(|| all_metrics(session, special))
            .metrics
    }

    /// Starts the job that works them out, if they are not there and no job is under way.
    pub fn start(doc: &Arc<Document>, repaint: &Repaint) {
        let cache = &doc.caches.metrics;
        let mut job = lock(&cache.job);
        if cache.value.get().is_some() || job.is_some() {
            return;
        }
        let held = doc.clone();
        *job = Some(Job::spawn("head metrics", repaint.clone(), move |_| {
            held.wait_for_metrics();
        }));
    }
}

/// Every head's metrics, worked out on all cores: opening a large session is mostly this.
fn all_metrics(session: &Session, special: &[Vec<bool>]) -> Summaries {
    let jobs: Vec<(usize, usize)> = session
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, layers)| (0..layers.len()).map(move |l| (i, l)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = jobs.len().div_ceil(threads).max(1);
    let layer = |&(i, l): &(usize, usize)| -> Vec<HeadSummary> {
        let special = special.get(i).map_or(&[][..], |s| s);
        let value_norms = session.value_norms(i, l);
        // Which keys each query sees, as the layer's own rule says (known where it has an lse).
        let mask = session
            .qk_parts(i, l)
            .map(|p| KeyMask::new(&[p.q.shape[1]], p.causal, None, p.attention.window));
        let context = LayerContext {
            special,
            value_norms: value_norms.as_deref(),
            kv_heads: session.meta.model.kv_heads,
            mask: mask.as_ref(),
        };
        if let Some(attn) = &session.layers[i][l].attn {
            return layer_summaries(attn, &context);
        }
        let Some(parts) = session.qk_parts(i, l) else {
            return Vec::new();
        };
        let side = thumbnail_side(parts.q.shape[1]);
        layer_summaries_from_qk(&parts.attention(), &context, side)
    };
    // Layers with materialised attention split over threads here; those from q, k and lse
    // spread their heads over rayon's pool themselves.
    let results: Vec<Vec<HeadSummary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(layer).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut thumbnails = Thumbnails::new();
    let mut received = Received::new();
    let mut flat = jobs.iter().zip(results);
    let retrieval: Vec<Option<Vec<Vec<f32>>>> = (0..session.layers.len())
        .map(|i| retrieval_scores(session, i))
        .collect();
    let heads = session.meta.model.heads;
    let importance: Vec<Option<Vec<f32>>> = (0..session.layers.len())
        .map(|i| session.importance(i))
        .collect();
    let metrics = session
        .layers
        .iter()
        .map(|layers| {
            (0..layers.len())
                .filter_map(|_| {
                    let (&(i, l), summaries) = flat.next()?;
                    received.insert((i, l), Arc::new(mean_received(&summaries)));
                    let mut metrics: Vec<HeadMetrics> =
                        summaries.iter().map(|s| s.metrics).collect();
                    for (h, summary) in summaries.into_iter().enumerate() {
                        if !summary.thumbnail.is_empty() {
                            thumbnails.insert((i, l, h), Arc::new(summary.thumbnail));
                        }
                    }
                    if let Some(scores) = retrieval[i].as_ref().and_then(|s| s.get(l)) {
                        for (m, &score) in metrics.iter_mut().zip(scores) {
                            m.set(HeadMetric::Retrieval, score);
                        }
                    }
                    if let Some(layer) = importance[i].as_ref().and_then(|v| v.get(l * heads..)) {
                        for (m, &value) in metrics.iter_mut().zip(layer) {
                            m.set(HeadMetric::Importance, value);
                        }
                    }
                    Some(metrics)
                })
                .collect()
        })
        .collect();
    Summaries {
        metrics,
        thumbnails,
        received,
    }
}

/// The mean over heads of what each key receives.
fn mean_received(summaries: &[HeadSummary]) -> Vec<f32> {
    let t = summaries.first().map_or(0, |s| s.received.len());
    let mut mean = vec![0.0f32; t];
    for s in summaries {
        for (m, r) in mean.iter_mut().zip(&s.received) {
            *m += r / summaries.len() as f32;
        }
    }
    mean
}
