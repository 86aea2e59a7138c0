//! How much each head's attention changed in an edited run against its base (the input its
//! `base` names, with the same tokens), `[layer][head]`, for the overview's "change" colouring:
//! from the matrices where both are materialised, else a row at a time from q, k and lse.
//! Worked out once per input: at once where both are materialised, else in a job.

use super::lock;
use crate::document::Document;
use crate::jobs::{Job, Repaint};
use headwise_engine::analysis::change::{head_change, head_change_by_rows};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every head's change, `[layer][head]`.
pub type Changes = Vec<Vec<f32>>;

#[derive(Default)]
pub struct ChangeCache {
    by_input: Mutex<HashMap<usize, Option<Arc<Changes>>>>,
    /// Inputs kept as q, k and lse: the change computed a row at a time, in a job.
    jobs: Mutex<HashMap<usize, Job<Option<Changes>>>>,
}

impl ChangeCache {
    /// The changes of input `input` against its base; None when it has none (or their tokens
    /// differ), or while the job that computes them is under way (`inline`: compute here).
    pub fn get(
        &self,
        doc: &Arc<Document>,
        input: usize,
        repaint: &Repaint,
        inline: bool,
    ) -> Option<Arc<Changes>> {
        if let Some(done) = lock(&self.by_input).get(&input) {
            return done.clone();
        }
        let base = doc.session.meta.inputs.get(input)?.base?;
        let quick = doc.materialised(input) && doc.materialised(base);
        if quick || inline {
            let value = changes(doc, input).map(Arc::new);
            lock(&self.by_input).insert(input, value.clone());
            return value;
        }
        let mut jobs = lock(&self.jobs);
        if let Some(job) = jobs.get(&input)
            && let Some(value) = job.poll()
        {
            let value = value.map(Arc::new);
            lock(&self.by_input).insert(input, value.clone());
            jobs.remove(&input);
            return value;
        }
        jobs.entry(input).or_insert_with(|| {
            let held = doc.clone();
            Job::spawn("attention change", repaint.clone(), move |_| {
                changes(&held, input)
            })
        });
        None
    }

    /// Whether the change of `input` is being worked out in the background.
    pub fn pending(&self, input: usize) -> bool {
        lock(&self.jobs).contains_key(&input)
    }
}

fn changes(doc: &Document, input: usize) -> Option<Changes> {
    let base = doc.session.meta.inputs.get(input)?.base?;
    let t = doc.tokens(input).len();
    if doc.tokens(base).len() != t
        || doc.session.meta.inputs[base].token_ids != doc.session.meta.inputs[input].token_ids
    {
        return None;
    }
    // Layers go to threads of their own: at 1,024 tokens SmolLM2 has 270 heads of a
    // million weights to rebuild from q, k and lse, twice.
    let layers = doc.layers();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(layers.max(1));
    let per_thread = layers.div_ceil(threads).max(1);
    let mut changes: Changes = vec![Vec::new(); layers];
    std::thread::scope(|scope| {
        for (thread, chunk) in changes.chunks_mut(per_thread).enumerate() {
            let first = thread * per_thread;
            scope.spawn(move || {
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    *slot = layer_changes(doc, input, base, first + offset, t);
                }
            });
        }
    });
    Some(changes)
}

/// Every head's change in one layer: from the matrices, else a row at a time from q, k and
/// lse (read once for the layer, not once a row).
fn layer_changes(doc: &Document, input: usize, base: usize, layer: usize, t: usize) -> Vec<f32> {
    let parts = [
        doc.session.qk_parts(input, layer),
        doc.session.qk_parts(base, layer),
    ];
    (0..doc.heads())
        .map(
            |head| match (doc.head(input, layer, head), doc.head(base, layer, head)) {
                (Some(a), Some(b)) => head_change(a, b, t),
                _ => match &parts {
                    [Some(edited), Some(unedited)] => {
                        let (edited, unedited) = (edited.attention(), unedited.attention());
                        head_change_by_rows(
                            t,
                            |i, row| edited.row(head, i, 0..t, row),
                            |i, row| unedited.row(head, i, 0..t, row),
                        )
                    }
                    _ => f32::NAN,
                },
            },
        )
        .collect()
}
