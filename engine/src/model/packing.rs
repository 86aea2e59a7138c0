//! Several inputs in one forward pass: their tokens laid end to end, each input's positions
//! counted from 0 and a block-diagonal mask so no token sees another input's. Every token's
//! computation is then the one it gets alone (to rounding), and the pass's capture is cut back
//! into one trace per input. On a GPU one pass of many short inputs is far cheaper than many
//! passes; this is how corpus runs are batched.

use super::gradient_tape::GradientTape;
use super::key_mask::KeyMask;
use crate::edits::{Edit, LayerEdits};
use crate::error::{EngineError, Result};
use crate::trace::{LayerTrace, Trace};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The lengths of the inputs packed into one sequence, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Packing<'a> {
    pub lengths: Vec<usize>,
    /// Whether the pass materialises each layer's [heads, T, T] attention for its trace; when
    /// not, attention is computed in tiles and only q, k and lse are kept (see `attend`).
    pub keep_attention: bool,
    /// Edits on the pass (one input only: a mean over tokens and key positions are per input).
    pub edits: Vec<Edit>,
    /// A gradient pass's tape (one input only; attention is then kept whole).
    pub tape: Option<GradientTape>,
    /// A pass over some layers only, from a given stream (layer-by-layer gradients).
    pub span: Option<LayerSpan>,
    /// Hears of each layer the pass enters, and may stop it there.
    pub watch: Option<LayerWatch<'a>>,
}

/// Told the index of each layer a pass is about to compute; returning false stops the pass
/// with [`EngineError::Cancelled`]. A long input's run reports progress and is cancelled
/// through it, between layers rather than between passes.
#[derive(Clone, Copy)]
pub struct LayerWatch<'a>(pub &'a dyn Fn(usize) -> bool);

impl std::fmt::Debug for LayerWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerWatch")
    }
}

/// A watch does not change what a pass computes, so any two are alike.
impl PartialEq for LayerWatch<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// From this many tokens a watched pass waits for each layer's input before reporting it: on
/// a device that queues work (wgpu) the report then says what is computed, not what is
/// queued. Shorter passes are over before a bar would show, and keep their queue.
const WATCH_WAITS_FROM_TOKENS: usize = 512;

/// Layers `start..end` run on `input` as the stream entering layer `start`; a span that ends
/// before the last layer stops there (no output layer) and records the stream in the tape.
#[derive(Debug, Clone)]
pub struct LayerSpan {
    pub start: usize,
    pub end: usize,
    pub input: Tensor<2>,
}

/// Spans are equal when they cover the same layers (tensors have no equality).
impl PartialEq for LayerSpan {
    fn eq(&self, other: &Self) -> bool {
        (self.start, self.end) == (other.start, other.end)
    }
}

impl Packing<'_> {
    /// One input whose attention is kept.
    pub fn single(t: usize) -> Self {
        Self {
            lengths: vec![t],
            keep_attention: true,
            edits: Vec::new(),
            tape: None,
            span: None,
            watch: None,
        }
    }

    /// Whether the pass runs layer `index`, the stream `x` entering it: a span skips the
    /// layers outside it and replaces the stream where it starts; a checkpoint tape keeps the
    /// stream; a watch hears of the layer and may cancel the pass.
    pub fn enters_layer(&self, index: usize, x: &mut Tensor<2>) -> Result<bool> {
        if let Some(span) = &self.span {
            if index < span.start || index >= span.end {
                return Ok(false);
            }
            if index == span.start {
                *x = span.input.clone();
            }
        }
        if let Some(tape) = &self.tape {
            tape.record_layer_input(index, x);
        }
        if let Some(LayerWatch(heard)) = self.watch {
            if index > 0 && self.total() >= WATCH_WAITS_FROM_TOKENS {
                // One value of the stream is enough to make the device finish the layers
                // before it.
                x.clone().slice([0..1, 0..1]).into_data();
            }
            if !heard(index) {
                return Err(EngineError::Cancelled);
            }
        }
        Ok(true)
    }

    /// Whether the pass stops after its span's last layer, short of the model's output
    /// (`layers` layers in all); the stream `x` is then recorded as the span's output.
    pub fn stops_early(&self, layers: usize, x: &Tensor<2>) -> bool {
        match (&self.span, &self.tape) {
            (Some(span), Some(tape)) if span.end < layers => {
                tape.record_span_output(x);
                true
            }
            (Some(span), None) => span.end < layers,
            _ => false,
        }
    }

    /// What the edits do to layer `layer` of a model with `heads` heads.
    pub fn layer_edits(&self, layer: usize, heads: usize) -> Option<LayerEdits> {
        LayerEdits::of(&self.edits, layer, heads)
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

    /// Which keys each query may see: nothing across inputs, causal within one if asked,
    /// padded keys hidden, and with a sliding `window` only keys fewer than `window` positions
    /// from the query (see [`LayerAttention::window`](crate::trace::LayerAttention)).
    pub fn mask(&self, causal: bool, key_valid: Option<&[bool]>, window: Option<usize>) -> KeyMask {
        KeyMask::new(&self.lengths, causal, key_valid, window)
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
        if let (Some(tape), Some(logits)) = (&self.tape, &next) {
            tape.record_logits(logits);
        }
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
            .enumerate()
            .map(|(i, ((s, &t), next_token_probs))| Trace {
                layers: layers
                    .iter()
                    .map(|l| {
                        let [heads, _, d] = l.q.dims();
                        let kv_heads = l.k.dims()[0];
                        LayerTrace {
                            attn: l
                                .attn
                                .as_ref()
                                .map(|a| a.clone().slice([0..heads, s..s + t, s..s + t])),
                            q: l.q.clone().slice([0..heads, s..s + t, 0..d]),
                            k: l.k.clone().slice([0..kv_heads, s..s + t, 0..d]),
                            lse: l.lse.clone().slice([0..heads, s..s + t]),
                            vnorm: l.vnorm.clone().slice([0..kv_heads, s..s + t]),
                            residual: l.residual.get(i).cloned().into_iter().collect(),
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
            keep_attention: true,
            edits: Vec::new(),
            tape: None,
            span: None,
            watch: None,
        };
        assert_eq!(p.positions(), vec![0, 1, 2, 0, 1]);
        assert_eq!(p.starts(), vec![0, 3]);
    }
}
