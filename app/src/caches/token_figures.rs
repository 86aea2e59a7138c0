//! Each token's extreme-token figures across layers for the token panel, `[layer][token]`:
//! hidden-state norm after the layer, mean value-vector norm over key heads, and the attention it
//! receives (mean over queries and heads, from the head-metrics pass). Read from the session
//! once per input; the attention part arrives with the metrics.

use super::lock;
use crate::document::Document;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the token panel plots of one input; each quantity is [layers × T] row-major, or None
/// where the session lacks it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFigures {
    pub layers: usize,
    pub tokens: usize,
    pub hidden_norm: Option<Vec<f32>>,
    pub value_norm: Option<Vec<f32>>,
    pub received: Option<Vec<f32>>,
}

impl TokenFigures {
    /// Token `token`'s value in every layer.
    pub fn across_layers(values: &[f32], tokens: usize, token: usize) -> Vec<f32> {
        values
            .chunks_exact(tokens.max(1))
            .filter_map(|row| row.get(token).copied())
            .collect()
    }
}

#[derive(Default)]
pub struct TokenFiguresCache {
    /// The figures of each input, and whether the metrics were in when they were read.
    by_input: Mutex<HashMap<usize, (Arc<TokenFigures>, bool)>>,
}

impl TokenFiguresCache {
    /// The figures of `input`; the attention received is None until the metrics are in.
    pub fn get(&self, doc: &Document, input: usize) -> Option<Arc<TokenFigures>> {
        let mut cached = lock(&self.by_input);
        let metrics_in = doc.metrics().is_some();
        if let Some((figures, with_metrics)) = cached.get(&input)
            && (*with_metrics || !metrics_in)
        {
            return Some(figures.clone());
        }
        let figures = Arc::new(figures_of(doc, input)?);
        cached.insert(input, (figures.clone(), metrics_in));
        Some(figures)
    }
}

fn figures_of(doc: &Document, input: usize) -> Option<TokenFigures> {
    let tokens = doc.session.meta.inputs.get(input)?.tokens.len();
    let layers = doc.layers();
    let gather = |per_layer: &dyn Fn(usize) -> Option<Vec<f32>>| -> Option<Vec<f32>> {
        let mut all = Vec::with_capacity(layers * tokens);
        for layer in 0..layers {
            let row = per_layer(layer)?;
            if row.len() != tokens {
                return None;
            }
            all.extend(row);
        }
        Some(all)
    };
    let session = &doc.session;
    let hidden_norm = gather(&|l| session.token_norms(input, l));
    let value_norm = gather(&|l| {
        let norms = session.value_norms(input, l)?;
        let kv_heads = norms.len() / tokens.max(1);
        Some(
            (0..tokens)
                .map(|j| {
                    (0..kv_heads).map(|g| norms[g * tokens + j]).sum::<f32>()
                        / kv_heads.max(1) as f32
                })
                .collect(),
        )
    });
    let received = doc.metrics().and_then(|_| {
        gather(&|l| {
            doc.caches
                .metrics
                .received(input, l)
                .map(|r| r.as_ref().clone())
        })
    });
    Some(TokenFigures {
        layers,
        tokens,
        hidden_norm,
        value_norm,
        received,
    })
}
