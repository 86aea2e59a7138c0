//! AttentionViz's joint query-key embedding of one head over a corpus.
//!
//! Queries and keys live in one space, but a head's keys are often far from its queries, so a
//! plain projection of both shows two unrelated clouds. AttentionViz moves them together in two
//! steps that leave every attention weight unchanged: the keys are translated so their mean is
//! the queries' mean (adding one vector to every key adds a constant to each row of logits,
//! which softmax ignores), then queries are scaled by c and keys by 1/c with
//! c = sqrt(mean‖k‖ / mean‖q‖) (q·k is unchanged), so both have the same mean norm.
//!
//! Both steps rely on the logits being `scale · q·k` (plus a mask) as each layer's
//! [`LayerAttention`] records it: the scale multiplies every logit alike, so it changes no
//! layout, but a soft-capped layer (`c·tanh(x/c)`) is not invariant under the key translation;
//! [`preserves_attention`] says which layers the first step keeps exact.
//!
//! The result stacks the N queries and then the N keys, each in input order then token order;
//! with grouped-query attention a query head is paired with the key head of its group.

use crate::attention::LayerAttention;
use crate::error::{EngineError, Result};
use crate::session::LayerTensors;
use burn::tensor::{Device, Tensor, TensorData};

/// One head's vectors over a corpus, row-major: `q` and `k` are both [n, d].
#[derive(Debug, Clone, PartialEq)]
pub struct HeadVectors {
    pub n: usize,
    pub d: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
}

/// Whether moving a head's keys by one vector leaves its attention unchanged: true unless the
/// layer soft-caps its logits (then the translation changes the tanh's input and the weights).
pub fn preserves_attention(attention: &LayerAttention) -> bool {
    attention.softcap.is_none()
}

/// The key head that query head `head` reads under grouped-query attention.
pub fn kv_head_of(head: usize, heads: usize, kv_heads: usize) -> usize {
    head / (heads / kv_heads.max(1)).max(1)
}

/// Head `head` of layer `layer`: its queries and keys over every input, in input order then
/// token order. `inputs[i][l]` is input i's capture of layer l.
pub fn gather(
    inputs: &[Vec<LayerTensors>],
    layer: usize,
    head: usize,
    heads: usize,
    kv_heads: usize,
) -> HeadVectors {
    let kv = kv_head_of(head, heads, kv_heads);
    let d = inputs
        .first()
        .and_then(|i| i.get(layer))
        .map_or(0, |l| l.q.shape[2]);
    let (mut q, mut k) = (Vec::new(), Vec::new());
    for input in inputs {
        let layer = &input[layer];
        let t = layer.q.shape[1];
        q.extend_from_slice(&layer.q.data[head * t * d..(head + 1) * t * d]);
        k.extend_from_slice(&layer.k.data[kv * t * d..(kv + 1) * t * d]);
    }
    HeadVectors {
        n: q.len() / d.max(1),
        d,
        q,
        k,
    }
}

/// Uploads several heads' vectors (all with the same n and d) as two [heads, n, d] tensors.
pub fn upload(heads: &[HeadVectors], device: &Device) -> Result<(Tensor<3>, Tensor<3>)> {
    let first = heads
        .first()
        .ok_or_else(|| EngineError::Projection("no heads to project".into()))?;
    let (n, d) = (first.n, first.d);
    if n < 2 {
        return Err(EngineError::Projection(format!(
            "the corpus has {n} token(s); a projection needs at least 2"
        )));
    }
    if heads.iter().any(|h| h.n != n || h.d != d) {
        return Err(EngineError::Projection(
            "heads of one batch must have the same number of tokens and dimensions".into(),
        ));
    }
    let stack = |pick: fn(&HeadVectors) -> &Vec<f32>| {
        let data: Vec<f32> = heads.iter().flat_map(|h| pick(h).iter().copied()).collect();
        Tensor::<3>::from_data(TensorData::new(data, vec![heads.len(), n, d]), device)
    };
    Ok((stack(|h| &h.q), stack(|h| &h.k)))
}

/// The normalisation above, for a batch of heads at once: q and k are [heads, n, d].
pub fn normalise(q: Tensor<3>, k: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let k = k.clone() - k.mean_dim(1) + q.clone().mean_dim(1);
    let mean_norm = |x: &Tensor<3>| x.clone().powi_scalar(2).sum_dim(2).sqrt().mean_dim(1);
    let c = (mean_norm(&k) / mean_norm(&q)).sqrt();
    (q * c.clone(), k / c)
}

/// The joint embedding of a batch of heads: [heads, 2n, d], the queries first.
pub fn joint_embedding(heads: &[HeadVectors], device: &Device) -> Result<Tensor<3>> {
    let (q, k) = upload(heads, device)?;
    let (q, k) = normalise(q, k);
    Ok(Tensor::cat(vec![q, k], 1))
}

/// Each vector's length in a batch of joint embeddings ([heads, 2n, d]): one [2n] array per
/// head, for colouring and sizing points by norm.
pub fn norms(joint: Tensor<3>) -> Result<Vec<Vec<f32>>> {
    let [_, rows, _] = joint.dims();
    let norms = crate::model::to_vec(joint.powi_scalar(2).sum_dim(2).sqrt())?;
    Ok(norms
        .chunks_exact(rows.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}
