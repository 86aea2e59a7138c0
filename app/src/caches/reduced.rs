//! Aggregates over heads (the mean or max of a layer's heads, or of every head) as [T, T]
//! matrices, worked out on first use per (input, matrix).

use super::lock;
use crate::render::heatmap::Matrix;
use headwise_engine::analysis::aggregate::reduce_heads;
use headwise_engine::session::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Each input's reduced matrices, by input and matrix.
type Reduced = HashMap<(usize, Matrix), Arc<Vec<f32>>>;

#[derive(Default)]
pub struct ReducedCache {
    values: Mutex<Reduced>,
}

impl ReducedCache {
    /// The aggregate `matrix` of input `input`; None for a single head or a missing index.
    pub fn get(&self, session: &Session, input: usize, matrix: Matrix) -> Option<Arc<Vec<f32>>> {
        if let Some(values) = lock(&self.values).get(&(input, matrix)) {
            return Some(values.clone());
        }
        let layers = session.layers.get(input)?;
        let values = match matrix {
            Matrix::Head { .. } | Matrix::Change { .. } | Matrix::Gradient { .. } => return None,
            // Needs every head's full matrix: none for inputs kept as q, k and lse.
            Matrix::Layer { layer, reduce } => {
                reduce_heads([layers.get(layer)?.attn.as_ref()?], reduce)
            }
            Matrix::Model { reduce } => {
                let all: Option<Vec<_>> = layers.iter().map(|l| l.attn.as_ref()).collect();
                reduce_heads(all?, reduce)
            }
        };
        let values = Arc::new(values.data.into_vec());
        lock(&self.values).insert((input, matrix), values.clone());
        Some(values)
    }
}
