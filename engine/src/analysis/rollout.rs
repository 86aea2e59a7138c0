//! Attention rollout (Abnar & Zuidema, 2020, with vit-explain's knobs): how much each token of
//! the input reaches each token of a later layer once every layer's attention is chained, the
//! residual connection counted as an identity added to each layer's attention.
//!
//! Per layer from `start_layer`: fuse the heads (mean, min or max), zero the lowest
//! `discard_ratio` of the fused weights (never the CLS → CLS weight, as vit-explain does), add
//! the identity, halve, and renormalise each row; then multiply the layers together, the last
//! layer leftmost. Row q of the result says where token q's representation after the last
//! layer comes from.

use crate::host::HostTensor;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;

/// How the heads of one layer become one matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Fusion {
    #[default]
    Mean,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutSettings {
    pub fusion: Fusion,
    /// The share (0..1) of each fused matrix's smallest weights set to zero.
    pub discard_ratio: f32,
    /// The first layer taken into the product.
    pub start_layer: usize,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            fusion: Fusion::Mean,
            discard_ratio: 0.0,
            start_layer: 0,
        }
    }
}

/// One layer's fused, pruned, residual-augmented and row-normalised attention: [T, T].
pub fn layer_matrix(attn: &HostTensor, settings: &RolloutSettings) -> Vec<f32> {
    let t = attn.shape[1];
    let size = t * t;
    let mut fused = match settings.fusion {
        Fusion::Mean => vec![0.0f32; size],
        Fusion::Min => vec![f32::INFINITY; size],
        Fusion::Max => vec![f32::NEG_INFINITY; size],
    };
    let heads = attn.data.chunks_exact(size);
    let count = heads.len() as f32;
    for head in heads {
        for (f, &v) in fused.iter_mut().zip(head) {
            *f = match settings.fusion {
                Fusion::Mean => *f + v,
                Fusion::Min => f.min(v),
                Fusion::Max => f.max(v),
            };
        }
    }
    if settings.fusion == Fusion::Mean {
        fused.iter_mut().for_each(|f| *f /= count);
    }
    let discard = (size as f64 * f64::from(settings.discard_ratio.clamp(0.0, 1.0))) as usize;
    if discard > 0 {
        // The `discard` smallest weights (ties broken by position, like a stable sort).
        let mut order: Vec<usize> = (0..size).collect();
        order.sort_by(|&a, &b| fused[a].total_cmp(&fused[b]).then(a.cmp(&b)));
        for &i in &order[..discard] {
            if i != 0 {
                fused[i] = 0.0;
            }
        }
    }
    for row in 0..t {
        let cells = &mut fused[row * t..(row + 1) * t];
        cells[row] += 1.0;
        let sum: f32 = cells.iter().map(|v| v * 0.5).sum();
        cells.iter_mut().for_each(|v| *v = *v * 0.5 / sum);
    }
    fused
}

/// The rollout of every layer from `start_layer` on: [T, T], row q for query token q.
pub fn rollout<L: Borrow<HostTensor>>(layers: &[L], settings: &RolloutSettings) -> Vec<f32> {
    let t = layers.first().map_or(0, |l| l.borrow().shape[1]);
    let mut result: Vec<f32> = (0..t * t)
        .map(|i| f32::from(u8::from(i / t == i % t)))
        .collect();
    for attn in layers.iter().skip(settings.start_layer) {
        let a = layer_matrix(attn.borrow(), settings);
        result = matmul(&a, &result, t);
    }
    result
}

/// Row `query` of the rollout, without the whole product: a vector times each layer's matrix,
/// last layer first.
pub fn rollout_row<L: Borrow<HostTensor>>(
    layers: &[L],
    settings: &RolloutSettings,
    query: usize,
) -> Vec<f32> {
    rollout_row_of(&LayerMatrices::new(layers, settings), query)
}

/// Every layer's [`layer_matrix`] from `start_layer` on, worked out once for a setting so that
/// rows for a moving query cost O(layers · T²) each instead of a sort per layer.
pub struct LayerMatrices {
    t: usize,
    matrices: Vec<Vec<f32>>,
}

impl LayerMatrices {
    pub fn new<L: Borrow<HostTensor>>(layers: &[L], settings: &RolloutSettings) -> Self {
        Self {
            t: layers.first().map_or(0, |l| l.borrow().shape[1]),
            matrices: layers
                .iter()
                .skip(settings.start_layer)
                .map(|l| layer_matrix(l.borrow(), settings))
                .collect(),
        }
    }
}

/// Row `query` of the rollout of already fused layer matrices.
pub fn rollout_row_of(layers: &LayerMatrices, query: usize) -> Vec<f32> {
    let t = layers.t;
    let mut row = vec![0.0f32; t];
    if query < t {
        row[query] = 1.0;
    }
    for a in layers.matrices.iter().rev() {
        let mut next = vec![0.0f32; t];
        for (k, &w) in row.iter().enumerate() {
            if w != 0.0 {
                for (n, &v) in next.iter_mut().zip(&a[k * t..(k + 1) * t]) {
                    *n += w * v;
                }
            }
        }
        row = next;
    }
    row
}

fn matmul(a: &[f32], b: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; t * t];
    for i in 0..t {
        let out_row = &mut out[i * t..(i + 1) * t];
        for k in 0..t {
            let w = a[i * t + k];
            for (o, &v) in out_row.iter_mut().zip(&b[k * t..(k + 1) * t]) {
                *o += w * v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_attention(heads: usize, t: usize, seed: u32) -> HostTensor {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut data = Vec::with_capacity(heads * t * t);
        for _ in 0..heads * t {
            let row: Vec<f32> = (0..t)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 1000) as f32 + 1.0
                })
                .collect();
            let sum: f32 = row.iter().sum();
            data.extend(row.iter().map(|v| v / sum));
        }
        HostTensor::new(vec![heads, t, t], data)
    }

    #[test]
    fn every_rollout_row_is_a_distribution() {
        let layers: Vec<_> = (0..3).map(|s| random_attention(4, 7, s + 1)).collect();
        for fusion in [Fusion::Mean, Fusion::Min, Fusion::Max] {
            let settings = RolloutSettings {
                fusion,
                discard_ratio: 0.3,
                start_layer: 1,
            };
            let joint = rollout(&layers, &settings);
            for row in joint.chunks(7) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{fusion:?}");
                assert!(row.iter().all(|&v| v >= 0.0));
            }
        }
    }

    #[test]
    fn one_row_equals_that_row_of_the_whole_product() {
        let layers: Vec<_> = (0..4).map(|s| random_attention(3, 9, s + 10)).collect();
        let settings = RolloutSettings {
            fusion: Fusion::Max,
            discard_ratio: 0.5,
            start_layer: 0,
        };
        let joint = rollout(&layers, &settings);
        for q in [0, 4, 8] {
            let row = rollout_row(&layers, &settings, q);
            for (a, b) in row.iter().zip(&joint[q * 9..(q + 1) * 9]) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn starting_past_the_last_layer_leaves_the_identity() {
        let layers = vec![random_attention(2, 5, 3)];
        let settings = RolloutSettings {
            start_layer: 1,
            ..Default::default()
        };
        let joint = rollout(&layers, &settings);
        assert_eq!(joint[0], 1.0);
        assert_eq!(joint[1], 0.0);
    }
}
