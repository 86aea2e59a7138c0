//! Several inputs in one forward pass: their tokens laid end to end, each input's positions
//! counted from 0 and a block-diagonal mask so no token sees another input's. Every token's
//! computation is then the one it gets alone (to rounding), and the pass's capture is cut back
//! into one trace per input. On a GPU one pass of many short inputs is far cheaper than many
//! passes; this is how corpus runs are batched.

use super::layers::MASKED;
use crate::error::Result;
use crate::trace::{LayerTrace, Trace};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The lengths of the inputs packed into one sequence, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    pub lengths: Vec<usize>,
}

impl Packing {
    pub fn single(t: usize) -> Self {
        Self { lengths: vec![t] }
    }

    pub fn total(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Each input's first token in the packed sequence.
    pub fn starts(&self) -> Vec<usize> {
        self.lengths
            .iter()
            .scan(0, |at, &t| {
                let start = *at;
                *at += t;
                Some(start)
            })
            .collect()
    }

    /// Every token's position within its own input.
    pub fn positions(&self) -> Vec<u32> {
        self.lengths.iter().flat_map(|&t| 0..t as u32).collect()
    }

    /// The [T, T] additive mask: nothing across inputs, causal within one if asked, padded keys
    /// hidden, and with a sliding `window` only keys fewer than `window` positions from the
    /// query (see [`LayerAttention::window`](crate::trace::LayerAttention)). None when nothing
    /// is masked (one input, not causal, no padding, no window shorter than the input).
    pub fn mask(
        &self,
        causal: bool,
        key_valid: Option<&[bool]>,
        window: Option<usize>,
        device: &Device,
    ) -> Option<Tensor<2>> {
        let single = self.lengths.len() == 1;
        let window_bites = window.is_some_and(|w| self.lengths.iter().any(|&t| t > w));
        if single
            && !causal
            && !window_bites
            && key_valid.is_none_or(|valid| valid.iter().all(|&v| v))
        {
            return None;
        }
        let t = self.total();
        let mut data = vec![MASKED; t * t];
        for (start, &len) in self.starts().into_iter().zip(&self.lengths) {
            for query in start..start + len {
                for key in start..start + len {
                    let hidden_future = causal && key > query;
                    let padded = key_valid.is_some_and(|valid| !valid[key]);
                    let outside_window = window.is_some_and(|w| query.abs_diff(key) >= w);
                    if !hidden_future && !padded && !outside_window {
                        data[query * t + key] = 0.0;
                    }
                }
            }
        }
        Some(Tensor::from_data(TensorData::new(data, vec![t, t]), device))
    }

    /// The hidden states of each input's last token: [inputs, hidden].
    pub fn last_rows(&self, x: Tensor<2>, device: &Device) -> Tensor<2> {
        let last: Vec<i64> = self
            .starts()
            .iter()
            .zip(&self.lengths)
            .map(|(s, t)| (s + t - 1) as i64)
            .collect();
        let n = last.len();
        x.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(last, vec![n]), device),
        )
    }

    /// Cuts a packed pass's layers (and the next-token distributions of each input's last
    /// token, [inputs, vocab], for decoders) into one trace per input.
    pub fn split(&self, layers: Vec<LayerTrace>, next: Option<Tensor<2>>) -> Result<Vec<Trace>> {
        let probs = match next {
            Some(p) => {
                let [_, vocab] = p.dims();
                let all = super::to_vec(softmax(p, 1))?;
                all.chunks_exact(vocab.max(1))
                    .map(|c| Some(c.to_vec()))
                    .collect()
            }
            None => vec![None; self.lengths.len()],
        };
        if self.lengths.len() == 1 {
            return Ok(vec![Trace {
                layers,
                next_token_probs: probs.into_iter().next().flatten(),
            }]);
        }
        Ok(self
            .starts()
            .into_iter()
            .zip(&self.lengths)
            .zip(probs)
            .map(|((s, &t), next_token_probs)| Trace {
                layers: layers
                    .iter()
                    .map(|l| {
                        let [heads, _, d] = l.q.dims();
                        let kv_heads = l.k.dims()[0];
                        LayerTrace {
                            attn: l.attn.clone().slice([0..heads, s..s + t, s..s + t]),
                            q: l.q.clone().slice([0..heads, s..s + t, 0..d]),
                            k: l.k.clone().slice([0..kv_heads, s..s + t, 0..d]),
                            lse: l.lse.clone().slice([0..heads, s..s + t]),
                            norms: None,
                        }
                    })
                    .collect(),
                next_token_probs,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_for_each_input_and_starts_follow_the_lengths() {
        let p = Packing {
            lengths: vec![3, 2],
        };
        assert_eq!(p.positions(), vec![0, 1, 2, 0, 1]);
        assert_eq!(p.starts(), vec![0, 3]);
    }

    #[test]
    fn the_mask_is_block_diagonal_and_causal_within_a_block() {
        let device = Device::flex();
        let p = Packing {
            lengths: vec![2, 2],
        };
        let mask = super::super::to_vec(p.mask(true, None, None, &device).unwrap()).unwrap();
        let open: Vec<bool> = mask.iter().map(|&v| v == 0.0).collect();
        #[rustfmt::skip]
        let expected = [
            true, false, false, false,
            true, true, false, false,
            false, false, true, false,
            false, false, true, true,
        ];
        assert_eq!(open, expected);
        assert!(
            Packing::single(3)
                .mask(false, None, None, &device)
                .is_none()
        );
        assert!(
            Packing::single(3)
                .mask(false, None, Some(3), &device)
                .is_none()
        );
    }

    #[test]
    fn a_window_hides_keys_as_far_back_as_the_window_within_each_block_only() {
        let device = Device::flex();
        let p = Packing {
            lengths: vec![4, 2],
        };
        let mask = super::super::to_vec(p.mask(true, None, Some(2), &device).unwrap()).unwrap();
        let open: Vec<bool> = mask.iter().map(|&v| v == 0.0).collect();
        #[rustfmt::skip]
        let expected = [
            true,  false, false, false, false, false,
            true,  true,  false, false, false, false,
            false, true,  true,  false, false, false,
            false, false, true,  true,  false, false,
            false, false, false, false, true,  false,
            false, false, false, false, true,  true,
        ];
        assert_eq!(open, expected);
    }
}
