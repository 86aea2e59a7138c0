//! How much each head's attention changed in an edited run against its base (the input its
//! `base` names, with the same tokens), `[layer][head]`, for the overview's "change" colouring:
//! from the matrices where both are materialised, else a row at a time from q, k and lse.
//! Worked out once per input.

use super::lock;
use crate::document::Document;
use headwise_engine::analysis::change::{head_change, head_change_by_rows};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every head's change, `[layer][head]`.
pub type Changes = Vec<Vec<f32>>;

#[derive(Default)]
pub struct ChangeCache {
    by_input: Mutex<HashMap<usize, Option<Arc<Changes>>>>,
}

impl ChangeCache {
    /// The changes of input `input` against its base; None when it has none (or their tokens
    /// differ).
    pub fn get(&self, doc: &Document, input: usize) -> Option<Arc<Changes>> {
        lock(&self.by_input)
            .entry(input)
            .or_insert_with(|| changes(doc, input).map(Arc::new))
            .clone()
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
