//! Attention weighted by what each weight moves (Kobayashi et al., "Attention is not only a
//! weight"): ‖α_ij v_j‖ = α_ij ‖v_j‖, renormalised over each query's row, so that a head that
//! puts 95% of its attention on a sink whose value is near zero shows where its output really
//! comes from.
//!
//! The weighted row is again a softmax, of the logits `z_ij + ln‖v_j‖`: its logsumexp is
//! `lse_i + ln S_i` with `S_i = Σ_j α_ij ‖v_j‖`. So a session of weighted attention is the
//! session itself with a per-key bias `ln‖v_j‖` and the new lse: every view, metric and cache
//! that reads attention (whole, by rows from q, k and lse, or by regions) shows it unchanged.

use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::session::Session;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// The session with each layer's attention value-weighted and renormalised per row. Queries,
/// keys and everything else are shared with `session`, not copied. `progress` gets the share
/// done; `cancel` stops between layers.
pub fn value_weighted(
    session: &Session,
    cancel: &AtomicBool,
    mut progress: impl FnMut(f32),
) -> Result<Session> {
    let mut weighted = session.clone();
    let m = &session.meta.model;
    let mut causal = vec![None; m.layers];
    let total = (session.layers.len() * m.layers).max(1);
    for (input, layers) in session.layers.iter().enumerate() {
        for layer in 0..layers.len() {
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let norms = session
                .value_norms(input, layer)
                .ok_or(EngineError::NoValueNorms { input, layer })?;
            let t = session.meta.inputs[input].tokens.len();
            let kv_heads = norms.len() / t.max(1);
            let heads = session.meta.model.heads;
            let group = (heads / kv_heads.max(1)).max(1);
            // ln|v_j| per query head, on top of what edits already add to the logits.
            let earlier = session.layers[input][layer].key_bias.as_ref();
            let bias: Vec<f32> = (0..heads * t)
                .map(|x| {
                    let (h, j) = (x / t, x % t);
                    let edit = earlier.and_then(|b| b.data.get(x)).copied().unwrap_or(0.0);
                    edit + norms[(h / group) * t + j].ln()
                })
                .collect();
            if let (Some(parts), Some(known)) =
                (session.qk_parts(input, layer), causal.get_mut(layer))
            {
                known.get_or_insert(parts.causal);
            }
            let tensors = &mut weighted.layers[input][layer];
            if let Some(attn) = &session.layers[input][layer].attn {
                let (reweighted, sums) = reweigh_matrix(attn, &norms, kv_heads);
                tensors.attn = Some(reweighted);
                if let Some(lse) = session.lse(input, layer) {
                    let shifted = shift_lse(&lse, &sums);
                    weighted.set_lse(input, layer, &shifted);
                }
            } else if let Some(parts) = session.qk_parts(input, layer) {
                let attention = parts.attention();
                let heads = attention.heads();
                let group = heads / kv_heads.max(1);
                let sums: Vec<f64> = (0..heads * t)
                    .into_par_iter()
                    .map_init(
                        || vec![0.0f32; t],
                        |row, r| {
                            let (h, i) = (r / t, r % t);
                            attention.row(h, i, 0..t, row);
                            let n = &norms[(h / group.max(1)) * t..][..t];
                            row.iter().zip(n).map(|(&a, &v)| a as f64 * v as f64).sum()
                        },
                    )
                    .collect();
                let shifted = shift_lse(&parts.lse, &sums);
                weighted.set_lse(input, layer, &shifted);
            }
            weighted.layers[input][layer].key_bias = Some(HostTensor::new(vec![kv_heads, t], bias));
            progress((input * m.layers + layer + 1) as f32 / total as f32);
        }
    }
    // The weighted lse no longer tells a causal layer from the first query's logit, so say it.
    for (l, stated) in causal.into_iter().enumerate() {
        if let Some(c) = stated {
            if weighted.meta.model.causal.len() <= l {
                weighted.meta.model.causal.resize(l + 1, None);
            }
            weighted.meta.model.causal[l].get_or_insert(c);
        }
    }
    Ok(weighted)
}

/// One layer's [heads, T, T] attention weighted by the value norms [kv_heads, T] and
/// renormalised per row, and each row's sum Σ_j α_ij ‖v_j‖ before renormalising.
pub fn reweigh_matrix(attn: &HostTensor, norms: &[f32], kv_heads: usize) -> (HostTensor, Vec<f64>) {
    let [heads, t] = [attn.shape[0], attn.shape[1]];
    let group = (heads / kv_heads.max(1)).max(1);
    let mut out = attn.data.to_vec();
    let sums: Vec<f64> = out
        .par_chunks_mut(t.max(1))
        .enumerate()
        .map(|(r, row)| {
            let n = &norms[(r / t / group) * t..][..t];
            let sum: f64 = row.iter().zip(n).map(|(&a, &v)| a as f64 * v as f64).sum();
            for (a, &v) in row.iter_mut().zip(n) {
                *a = if sum > 0.0 {
                    (*a as f64 * v as f64 / sum) as f32
                } else {
                    0.0
                };
            }
            sum
        })
        .collect();
    (HostTensor::new(attn.shape.clone(), out), sums)
}

/// `lse_i + ln S_i`; +∞ where a row moves nothing (S_i = 0), which makes its weights 0.
fn shift_lse(lse: &[f32], sums: &[f64]) -> Vec<f32> {
    lse.iter()
        .zip(sums)
        .map(|(&l, &s)| {
            if s > 0.0 {
                (l as f64 + s.ln()) as f32
            } else {
                f32::INFINITY
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_attention_times_value_norm_renormalised_per_row() {
        // One head, two queries, three keys; the second key's value is twice as long.
        let attn = HostTensor::new(vec![1, 2, 2], vec![0.5, 0.5, 0.9, 0.1]);
        let (w, sums) = reweigh_matrix(&attn, &[1.0, 2.0], 1);
        assert!((w.data[0] - 1.0 / 3.0).abs() < 1e-6);
        assert!((w.data[1] - 2.0 / 3.0).abs() < 1e-6);
        assert!((w.data[2] - 0.9 / 1.1).abs() < 1e-6);
        assert!((sums[1] - 1.1).abs() < 1e-6);
    }

    #[test]
    fn a_row_on_zero_values_moves_nothing() {
        let attn = HostTensor::new(vec![1, 1, 1], vec![1.0]);
        let (w, _) = reweigh_matrix(&attn, &[0.0], 1);
        assert_eq!(w.data[0], 0.0);
    }
}
