//! Each layer's patch norms and where the CLS token's attention goes, for image inputs whose
//! session has the norms (the image view's artifact table and its rings round high-norm
//! patches): worked out once per input.

use super::lock;
use headwise_engine::analysis::artifacts::{LayerArtifacts, layer_artifacts};
use headwise_engine::session::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One entry per layer; None where the session has no norms for it.
pub type InputArtifacts = Arc<Vec<Option<LayerArtifacts>>>;

#[derive(Default)]
pub struct ArtifactsCache {
    by_input: Mutex<HashMap<usize, InputArtifacts>>,
}

impl ArtifactsCache {
    pub fn get(&self, session: &Session, input: usize) -> InputArtifacts {
        if let Some(rows) = lock(&self.by_input).get(&input) {
            return rows.clone();
        }
        let prefix = session
            .meta
            .inputs
            .get(input)
            .and_then(|i| i.prefix_tokens)
            .unwrap_or(0);
        let rows: InputArtifacts = Arc::new(
            (0..session.meta.model.layers)
                .map(|l| {
                    let norms = session.token_norms(input, l)?;
                    Some(layer_artifacts(
                        &norms,
                        session.layers.get(input)?.get(l)?.attn.as_ref()?,
                        prefix,
                    ))
                })
                .collect(),
        );
        lock(&self.by_input).insert(input, rows.clone());
        rows
    }
}
