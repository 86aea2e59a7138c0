//! Attention rebuilt on the host from a layer's q, k and lse, for sessions that store none
//! (format 2 lets `attn/...` be absent: long inputs, `--attention none`, Python captures past
//! their budget). DESIGN's definition, exactly: `a_ij = exp(z_ij − lse_i)` with
//! `z = softcap(scale · q·kᵀ)`, zero where the mask hides the key (later keys in a causal
//! layer, keys outside the layer's window); query head h reads key head h / (heads / kv_heads).

use crate::attention::LayerAttention;
use crate::host::HostTensor;
use rayon::prelude::*;

/// One layer's attention, [heads, T, T]. `q` is [heads, T, d], `k` [kv_heads, T, d] and
/// `lse` [heads, T] row-major.
pub fn rebuild_attention(
    q: &HostTensor,
    k: &HostTensor,
    lse: &[f32],
    layer: &LayerAttention,
    causal: bool,
) -> HostTensor {
    let [heads, t, d] = [q.shape[0], q.shape[1], q.shape[2]];
    let group = heads / k.shape[0].max(1);
    let mut out = vec![0.0f32; heads * t * t];
    out.par_chunks_mut(t.max(1))
        .enumerate()
        .for_each(|(row, cells)| {
            let (h, i) = (row / t, row % t);
            let kh = h / group.max(1);
            let qi = &q.data[row * d..(row + 1) * d];
            let lse = lse[row];
            for (j, cell) in cells.iter_mut().enumerate() {
                if (causal && j > i) || !layer.in_window(i, j) {
                    continue;
                }
                let kj = &k.data[(kh * t + j) * d..(kh * t + j + 1) * d];
                let dot: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                *cell = (layer.logit(dot) - lse).exp();
            }
        });
    HostTensor::new(vec![heads, t, t], out)
}

/// Whether a layer masks later keys, read off its lse where the file does not say: in a
/// causal layer the first query sees only itself, so its lse is its own logit in every head.
pub fn looks_causal(q: &HostTensor, k: &HostTensor, lse: &[f32], layer: &LayerAttention) -> bool {
    let [heads, t, d] = [q.shape[0], q.shape[1], q.shape[2]];
    if t < 2 {
        return false;
    }
    let group = heads / k.shape[0].max(1);
    (0..heads).all(|h| {
        let qi = &q.data[h * t * d..h * t * d + d];
        let kh = (h / group.max(1)) * t * d;
        let own = layer.logit(qi.iter().zip(&k.data[kh..kh + d]).map(|(a, b)| a * b).sum());
        (own - lse[h * t]).abs() <= 1e-4 * own.abs().max(1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], data: &[f32]) -> HostTensor {
        HostTensor::new(shape.to_vec(), data.to_vec())
    }

    /// Two heads sharing one key head, three tokens, d = 2, logits and lse by hand.
    fn case() -> (HostTensor, HostTensor) {
        let q = tensor(
            &[2, 3, 2],
            &[1.0, 0.0, 0.5, 1.0, 0.0, 2.0, -1.0, 1.0, 2.0, 0.0, 1.0, 1.0],
        );
        let k = tensor(&[1, 3, 2], &[1.0, 1.0, 0.0, 1.0, 2.0, -1.0]);
        (q, k)
    }

    fn lse_of(q: &HostTensor, k: &HostTensor, layer: &LayerAttention, causal: bool) -> Vec<f32> {
        let mut lse = Vec::new();
        for row in 0..6 {
            let i = row % 3;
            let qi = &q.data[row * 2..row * 2 + 2];
            let visible = (0..3).filter(|&j| !(causal && j > i) && layer.in_window(i, j));
            let logits: Vec<f32> = visible
                .map(|j| layer.logit(qi[0] * k.data[j * 2] + qi[1] * k.data[j * 2 + 1]))
                .collect();
            lse.push(logits.iter().map(|z| z.exp()).sum::<f32>().ln());
        }
        lse
    }

    #[test]
    fn rows_are_softmaxes_of_the_logits_with_the_mask_applied() {
        let (q, k) = case();
        let layer = LayerAttention::standard(2, false);
        for causal in [false, true] {
            let a = rebuild_attention(&q, &k, &lse_of(&q, &k, &layer, causal), &layer, causal);
            for row in a.data.chunks(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
            // Query 0, head 0: k0 = (1, 1), k1 = (0, 1), k2 = (2, -1); q0 = (1, 0).
            let z = [1.0f32, 0.0, 2.0].map(|d| d / 2f32.sqrt());
            if causal {
                assert!(
                    (a.data[0] - 1.0).abs() < 1e-6,
                    "the first query sees only itself"
                );
                assert_eq!(&a.data[1..3], &[0.0, 0.0]);
            } else {
                let sum: f32 = z.iter().map(|v| v.exp()).sum();
                for j in 0..3 {
                    assert!((a.data[j] - z[j].exp() / sum).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn windows_and_soft_caps_are_applied_and_causality_is_read_off_the_lse() {
        let (q, k) = case();
        let layer = LayerAttention {
            softcap: Some(0.5),
            window: Some(2),
            ..LayerAttention::standard(2, false)
        };
        let lse = lse_of(&q, &k, &layer, true);
        let a = rebuild_attention(&q, &k, &lse, &layer, true);
        // Query 2 sees keys 1 and 2 only.
        assert_eq!(a.data[2 * 3], 0.0);
        assert!((a.data[2 * 3 + 1] + a.data[2 * 3 + 2] - 1.0).abs() < 1e-6);
        assert!(looks_causal(&q, &k, &lse, &layer));
        assert!(!looks_causal(
            &q,
            &k,
            &lse_of(&q, &k, &layer, false),
            &layer
        ));
    }
}
