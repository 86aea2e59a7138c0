//! Every head's metrics (entropy, distances, shares), `[input][layer][head]`, worked out once per
//! document: at once for small sessions, in a job for large ones so the first frame does not
//! wait (about 0.1 s per 100 MB on 2 cores). The job cannot stop half-way; it ends with its
//! document.

use super::lock;
use crate::document::Document;
use crate::jobs::{Job, Repaint};
use headwise_engine::analysis::metrics::{HeadMetrics, layer_metrics};
use headwise_engine::session::Session;
use std::sync::{Arc, Mutex, OnceLock};

/// Every head's metrics, `[input][layer][head]`.
pub type Metrics = Vec<Vec<Vec<HeadMetrics>>>;

/// Sessions with more attention than this get their head metrics in the background.
const IN_BACKGROUND_ABOVE_BYTES: u64 = 128 << 20;

#[derive(Default)]
pub struct MetricsCache {
    value: OnceLock<Metrics>,
    job: Mutex<Option<Job<()>>>,
}

impl MetricsCache {
    /// Fills the cache at once for a session small enough that this costs no noticeable time.
    pub fn fill_if_small(&self, session: &Session, special: &[Vec<bool>]) {
        let bytes: u64 = session
            .layers
            .iter()
            .flatten()
            .map(|l| l.attn.data.len() as u64 * 4)
            .sum();
        if bytes <= IN_BACKGROUND_ABOVE_BYTES {
            let _ = self.value.set(all_metrics(session, special));
        }
    }

    /// The metrics if they are worked out yet.
    pub fn get(&self) -> Option<&Metrics> {
        self.value.get()
    }

    /// The metrics, working them out first (or waiting for the job that does).
    pub fn wait(&self, session: &Session, special: &[Vec<bool>]) -> &Metrics {
        self.value.get_or_init(|| all_metrics(session, special))
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
fn all_metrics(session: &Session, special: &[Vec<bool>]) -> Metrics {
    let jobs: Vec<(usize, usize)> = session
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, layers)| (0..layers.len()).map(move |l| (i, l)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = jobs.len().div_ceil(threads).max(1);
    let results: Vec<Vec<HeadMetrics>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&(i, l)| layer_metrics(&session.layers[i][l].attn, &special[i]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut flat = results.into_iter();
    session
        .layers
        .iter()
        .map(|layers| (0..layers.len()).filter_map(|_| flat.next()).collect())
        .collect()
}
