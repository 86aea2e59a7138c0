//! Building blocks shared by the architectures: linear layers, norms, and attention with capture.

use super::cpu_kernels::{MaskTile, attention_softmax};
use super::gradient_tape::GradientTape;
use super::key_mask::KeyMask;
use super::weights::WeightSource;
use super::{cpu_attention, gpu_attention};
use crate::edits::LayerEdits;
use crate::error::Result;
use crate::host::HostTensor;
use crate::trace::{LayerAttention, LayerTrace};
use burn::tensor::{Device, Tensor, TensorData};

pub fn upload<const D: usize>(t: &HostTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.to_vec(), t.shape.clone()), device)
}

/// `x · W + b` with W stored [in, out] on the device.
pub struct Linear {
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    /// From a Hugging Face `nn.Linear` ([out, in]) under `{name}.weight` / `{name}.bias`.
    pub fn load(w: &dyn WeightSource, name: &str, bias: bool, device: &Device) -> Result<Self> {
        let weight = w.tensor(&format!("{name}.weight"))?.transposed();
        let bias = if bias {
            Some(w.tensor(&format!("{name}.bias"))?)
        } else {
            None
        };
        Ok(Self::from_host(&weight, bias.as_ref(), device))
    }

    /// As [`Linear::load`], checking the weight is [out, in] (and the bias [out]), so that a
    /// checkpoint that disagrees with its config is an error naming the tensor, not a failed
    /// reshape later.
    pub fn load_shaped(
        w: &dyn WeightSource,
        name: &str,
        bias: bool,
        [out, input]: [usize; 2],
        device: &Device,
    ) -> Result<Self> {
        let weight_name = format!("{name}.weight");
        let weight = w.tensor(&weight_name)?;
        expect_shape(w, &weight_name, &weight, &[out, input])?;
        let bias = if bias {
            let bias_name = format!("{name}.bias");
            let b = w.tensor(&bias_name)?;
            expect_shape(w, &bias_name, &b, &[out])?;
            Some(b)
        } else {
            None
        };
        Ok(Self::from_host(&weight.transposed(), bias.as_ref(), device))
    }

    /// From a weight already laid out [in, out] (GPT-2's Conv1D, split QKV parts).
    pub fn from_host(
        weight_in_out: &HostTensor,
        bias: Option<&HostTensor>,
        device: &Device,
    ) -> Self {
        Self {
            weight: upload(weight_in_out, device),
            bias: bias.map(|b| upload(b, device)),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.weight.clone());
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// An error naming the tensor unless it has `shape`.
pub fn expect_shape(
    w: &dyn WeightSource,
    name: &str,
    t: &HostTensor,
    shape: &[usize],
) -> Result<()> {
    if t.shape != shape {
        return Err(crate::EngineError::BadTensor {
            path: w.path().to_path_buf(),
            name: name.to_string(),
            reason: format!("shape {:?}, the config implies {shape:?}", t.shape),
        });
    }
    Ok(())
}

/// LayerNorm over the last dimension with the biased variance, as PyTorch computes it.
pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    /// Older BERT checkpoints call the parameters gamma/beta instead of weight/bias.
    pub fn load(w: &dyn WeightSource, name: &str, eps: f64, device: &Device) -> Result<Self> {
        let gamma = w.first_of(&[format!("{name}.weight"), format!("{name}.gamma")])?;
        let beta = w.first_of(&[format!("{name}.bias"), format!("{name}.beta")])?;
        Ok(Self {
            gamma: upload(&gamma, device),
            beta: upload(&beta, device),
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.gamma.clone().unsqueeze::<2>() + self.beta.clone().unsqueeze::<2>()
    }
}

/// Llama's RMSNorm: `w · x / sqrt(mean(x²) + eps)`.
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(w: &dyn WeightSource, name: &str, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: upload(&w.tensor(&format!("{name}.weight"))?, device),
            eps,
        })
    }

    /// As [`RmsNorm::load`], checking the weight has `len` values.
    pub fn load_shaped(
        w: &dyn WeightSource,
        name: &str,
        len: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        let weight_name = format!("{name}.weight");
        let weight = w.tensor(&weight_name)?;
        expect_shape(w, &weight_name, &weight, &[len])?;
        Ok(Self {
            weight: upload(&weight, device),
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mean_square = x.clone().square().mean_dim(1);
        let normed = x * (mean_square + self.eps).sqrt().recip();
        normed * self.weight.clone().unsqueeze::<2>()
    }
}

/// [T, heads·d] → [heads, T, d]
pub fn split_heads(x: Tensor<2>, heads: usize) -> Tensor<3> {
    let [t, width] = x.dims();
    x.reshape([t, heads, width / heads]).swap_dims(0, 1)
}

/// [heads, T, d] → [T, heads·d]
pub fn merge_heads(x: Tensor<3>) -> Tensor<2> {
    let [heads, t, d] = x.dims();
    x.swap_dims(0, 1).reshape([t, heads * d])
}

/// Repeats each kv head for the query heads of its group: query head h reads kv head h / group.
pub(crate) fn expand_kv(x: Tensor<3>, heads: usize) -> Tensor<3> {
    let [kv_heads, t, d] = x.dims();
    if kv_heads == heads {
        return x;
    }
    let group = heads / kv_heads;
    x.unsqueeze_dim::<4>(1)
        .expand([kv_heads, group, t, d])
        .reshape([heads, t, d])
}

/// Attention that keeps what a trace needs, with the logits `z = softcap(scale · q·kᵀ) + mask`
/// of `attention` (see [`LayerAttention`]).
///
/// `q` [heads, T, d] and `k`, `v` [kv_heads, T, d] are already projected (and rotated, for RoPE).
/// `mask` says which keys each query sees, sliding window included (see `Packing::mask`).
/// With `keep_attention` the layer's [heads, T, T] attention is computed whole and kept in the
/// trace; without, only q, k and the rows' logsumexp are kept, and attention is computed in
/// tiles: by a fused kernel where one applies (`cpu_attention.rs` on the CPU, `gpu_attention.rs`
/// on wgpu), else a tile of query rows at a time over only the keys those rows can see, never
/// more than [`ATTENTION_TILE_BYTES`] of logits at once. All give the same context and lse, to
/// rounding.
/// With a gradient `tape` (which needs `keep_attention`), the attention and each head's output
/// pass through the tape's leaves of ones (see [`GradientTape`]).
/// Returns the merged context [T, heads·d] and the layer's trace.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: &KeyMask,
    attention: &LayerAttention,
    keep_attention: bool,
    edits: Option<&LayerEdits>,
    tape: Option<&GradientTape>,
) -> (Tensor<2>, LayerTrace) {
    let [heads, t, d] = q.dims();
    let kv_heads = v.dims()[0];
    let device = q.device();
    let vnorm = v.clone().square().sum_dim(2).sqrt().reshape([kv_heads, t]);
    // The fused kernels (CPU and wgpu) compute plain `scale · q·k` logits; a soft-cap, a scale
    // edit or a gradient tape's leaves take the path below, and so do short passes (see
    // FUSED_FROM_TOKENS).
    let plain_logits = attention.softcap.is_none() && edits.is_none_or(|e| e.key_bias.is_empty());
    if !keep_attention
        && t >= FUSED_FROM_TOKENS
        && tape.is_none_or(|tape| !tape.makes_leaves())
        && plain_logits
        && let Some((context, lse)) =
            cpu_attention::fused_attention(&q, &k, &v, mask, attention.scale)
                .or_else(|| gpu_attention::fused_attention(&q, &k, &v, mask, attention.scale))
    {
        let context = match edits {
            Some(e) => ablate(context, e),
            None => context,
        };
        let trace = LayerTrace {
            attn: None,
            q,
            k,
            lse,
            vnorm,
            residual: Vec::new(),
        };
        return (merge_heads(context), trace);
    }
    let keys = expand_kv(k.clone(), heads);
    let values = expand_kv(v, heads);
    let dv = values.dims()[2];
    // Scale edits: ln F added to each query's logit of the key, after scale and soft-cap.
    let bias: Option<Tensor<2>> = edits
        .and_then(|e| e.bias(heads, t))
        .map(|b| Tensor::from_data(TensorData::new(b, vec![heads, t]), &device));
    let softmax =
        |logits: Tensor<3>, cols: std::ops::Range<usize>, tile: Option<&MaskTile>| match &bias {
            None => attention_softmax(logits, attention.scale, attention.softcap, tile),
            Some(b) => {
                let mut z = logits * attention.scale;
                if let Some(c) = attention.softcap {
                    z = (z / c).tanh() * c;
                }
                let z = z + b.clone().slice([0..heads, cols]).unsqueeze_dim::<3>(1);
                attention_softmax(z, 1.0, None, tile)
            }
        };
    let leaves = tape
        .filter(|tape| tape.makes_leaves())
        .map(|tape| tape.layer_leaves(heads, t, &device));
    let (attn, context, lse) = if keep_attention || leaves.is_some() {
        let logits = q.clone().matmul(keys.swap_dims(1, 2));
        let tile = MaskTile::of(mask, 0..t, 0..t);
        let (attn, lse) = softmax(logits, 0..t, tile.as_ref());
        let weighing = match &leaves {
            Some((multiplier, _)) => attn.clone() * multiplier.clone(),
            None => attn.clone(),
        };
        let context = weighing.matmul(values);
        (Some(attn), context, lse)
    } else {
        let rows_per_tile = tile_rows(heads, t);
        let mut contexts = Vec::with_capacity(t.div_ceil(rows_per_tile));
        let mut lses = Vec::with_capacity(contexts.capacity());
        for start in (0..t).step_by(rows_per_tile) {
            let rows = start..(start + rows_per_tile).min(t);
            let cols = mask.key_range(rows.clone());
            let q_tile = q.clone().slice([0..heads, rows.clone(), 0..d]);
            if cols.is_empty() {
                // Queries that see no key (never in a real pass): a zero context, as softmax
                // over nothing is taken to be.
                contexts.push(Tensor::zeros([heads, rows.len(), dv], &device));
                lses.push(Tensor::full(
                    [heads, rows.len()],
                    f32::NEG_INFINITY,
                    &device,
                ));
                continue;
            }
            let k_tile = keys.clone().slice([0..heads, cols.clone(), 0..d]);
            let v_tile = values.clone().slice([0..heads, cols.clone(), 0..dv]);
            let logits = q_tile.matmul(k_tile.swap_dims(1, 2));
            let tile = MaskTile::of(mask, rows, cols.clone());
            let (p, lse) = softmax(logits, cols, tile.as_ref());
            contexts.push(p.matmul(v_tile));
            lses.push(lse);
        }
        (None, Tensor::cat(contexts, 1), Tensor::cat(lses, 1))
    };
    let context = match edits {
        Some(e) => ablate(context, e),
        None => context,
    };
    let context = match leaves {
        Some((_, gate)) => context * gate,
        None => context,
    };
    let trace = LayerTrace {
        attn,
        q,
        k,
        lse,
        vnorm,
        residual: Vec::new(),
    };
    (merge_heads(context), trace)
}

/// The context [heads, T, dv] with ablated heads zeroed and mean-ablated heads replaced by their
/// mean over the tokens.
fn ablate(context: Tensor<3>, edits: &LayerEdits) -> Tensor<3> {
    if !edits.ablated.iter().chain(&edits.mean).any(|&a| a) {
        return context;
    }
    let heads = context.dims()[0];
    let device = context.device();
    let column = |values: Vec<f32>| -> Tensor<3> {
        Tensor::from_data(TensorData::new(values, vec![heads, 1, 1]), &device)
    };
    let keep = column(
        (0..heads)
            .map(|h| f32::from(!(edits.ablated[h] || edits.mean[h])))
            .collect(),
    );
    let kept = context.clone() * keep;
    if !edits.mean.iter().any(|&m| m) {
        return kept;
    }
    let mean = column((0..heads).map(|h| f32::from(edits.mean[h])).collect());
    kept + context.mean_dim(1) * mean
}

/// From this many tokens a pass that keeps q, k and lse computes attention with a fused kernel
/// (`cpu_attention.rs`, 1.4× faster end to end on SmolLM2 at 2,048 tokens; `gpu_attention.rs`
/// on wgpu). Shorter passes keep burn's path, whose matrix products sum in the order the
/// materialised pass does: a short input's tiled and materialised captures then agree to the
/// last bits, and both with transformers to 1e-5. (The CPU kernel agrees with attention computed
/// in f64 to 1e-6; at the depth of a few layers, f32 orders of summation differ by about 1e-5.)
pub const FUSED_FROM_TOKENS: usize = 512;

/// The most logits one tile of [`attend`] holds: 32 MiB, with its probabilities as much again.
/// Measured on SmolLM2 at 8,192 tokens on 2 cores (forward + capture): 8 MiB tiles (28 rows)
/// 56.2 s, 32 MiB (113 rows) 45.6 s, 128 MiB slower again at 4,096 tokens (taller tiles compute
/// more of the causal mask's hidden upper triangle; shorter ones make thin matrix products).
pub const ATTENTION_TILE_BYTES: usize = 32 << 20;

/// How many query rows a tile of [`attend`] takes so that its logits over all `t` keys of all
/// `heads` fit [`ATTENTION_TILE_BYTES`]: at least one, at most `t`.
pub fn tile_rows(heads: usize, t: usize) -> usize {
    let per_row = heads.max(1).saturating_mul(t.max(1)).saturating_mul(4);
    (ATTENTION_TILE_BYTES / per_row).clamp(1, t.max(1))
}

/// The value added to a logit to forbid it: the most negative f32, as transformers uses.
pub const MASKED: f32 = f32::MIN;

/// Rows of an embedding table for the given ids: [T, hidden].
pub fn embed(table: &Tensor<2>, ids: &[u32], device: &Device) -> Tensor<2> {
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let n = ids.len();
    let index = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(ids, vec![n]), device);
    table.clone().select(0, index)
}
