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
    Some(
        (0..doc.layers())
            .map(|layer| {
                (0..doc.heads())
                    .map(
                        |head| match (doc.head(input, layer, head), doc.head(base, layer, head)) {
                            (Some(a), Some(b)) => head_change(a, b, t),
                            _ => head_change_by_rows(
                                t,
                                |i, row| fill_row(doc, input, layer, head, i, row),
                                |i, row| fill_row(doc, base, layer, head, i, row),
                            ),
                        },
                    )
                    .collect()
            })
            .collect(),
    )
}

fn fill_row(doc: &Document, input: usize, layer: usize, head: usize, i: usize, out: &mut [f32]) {
    match doc.row(input, layer, head, i) {
        Some(row) => out.copy_from_slice(&row),
        None => out.fill(0.0),
    }
}
