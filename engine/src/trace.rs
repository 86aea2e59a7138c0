//! What a forward pass captures: per layer the attention probabilities, queries and keys.

pub use crate::attention::LayerAttention;
use burn::tensor::Tensor;

/// One layer's capture, still on the compute device.
///
/// `q` and `k` are the vectors that enter the attention dot product: after RoPE and any q/k norm,
/// before any scale. The logits follow from them by the layer's [`LayerAttention`]. With
/// grouped-query attention, query head h uses key head h / (heads / kv_heads).
#[derive(Clone, Debug)]
pub struct LayerTrace {
    /// [heads, T, T], one row per query token, when the pass materialised it (see
    /// [`AttentionCapture`]); any weight is also `exp(z_ij − lse_i)` from `q`, `k` and `lse`.
    pub attn: Option<Tensor<3>>,
    /// [heads, T, d]
    pub q: Tensor<3>,
    /// [kv_heads, T, d]
    pub k: Tensor<3>,
    /// [heads, T]: the logsumexp of each query row's logits (mask included), so that any
    /// attention weight is `exp(z_ij − lse_i)`.
    pub lse: Tensor<2>,
    /// [kv_heads, T]: the L2 norm of each value vector, as it enters the attention product.
    /// A head that puts most of its attention on a token whose value is near zero moves almost
    /// nothing (the "value drain" of attention sinks).
    pub vnorm: Tensor<2>,
    /// The residual stream after this layer, one entry per input packed into the pass (one
    /// after [`Packing::split`](crate::model::packing::Packing::split)); empty until the family's
    /// loop has run the layer.
    pub residual: Vec<ResidualFigures>,
}

/// The most activations a trace keeps per layer and input (`massive/{input}/{layer}`).
pub const MASSIVE_ROWS: usize = 16;

/// What a trace keeps of the residual stream after a layer, for one input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResidualFigures {
    /// [T]: each token's hidden-state L2 norm, which shows the sink tokens' residual peaks and
    /// the high-norm "artifact" patches of ViTs without registers.
    pub norms: Vec<f32>,
    /// The largest |activations| as (token, channel, value), largest first, at most
    /// [`MASSIVE_ROWS`].
    pub massive: Vec<[f32; 3]>,
}

/// Whether a forward pass materialises each layer's [heads, T, T] attention, or keeps only q, k
/// and lse (from which any weight is exact, DESIGN.md "Session format 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionCapture {
    /// Always materialised.
    Full,
    /// Materialised while one input's attention over every layer fits `budget` bytes.
    Auto { budget: u64 },
    /// Never: q, k and lse only, attention computed in tiles.
    None,
}

impl AttentionCapture {
    /// `--attention auto`'s budget: 256 MiB.
    pub const DEFAULT_BUDGET: u64 = 256 << 20;

    /// Whether an input of `tokens` tokens through `layers` layers of `heads` heads keeps its
    /// attention.
    pub fn keeps(&self, layers: usize, heads: usize, tokens: usize) -> bool {
        match *self {
            Self::Full => true,
            Self::None => false,
            Self::Auto { budget } => attention_bytes(layers, heads, tokens) <= budget,
        }
    }
}

impl Default for AttentionCapture {
    fn default() -> Self {
        Self::Auto {
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

impl std::str::FromStr for AttentionCapture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "auto" => Ok(Self::default()),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown attention capture '{other}' (full, auto or none)"
            )),
        }
    }
}

/// The bytes of one input's f32 attention over every layer: layers × heads × T², saturating.
pub fn attention_bytes(layers: usize, heads: usize, tokens: usize) -> u64 {
    (layers as u64)
        .saturating_mul(heads as u64)
        .saturating_mul((tokens as u64).saturating_mul(tokens as u64))
        .saturating_mul(4)
}

/// Everything one input's forward pass produced.
#[derive(Clone, Debug)]
pub struct Trace {
    pub layers: Vec<LayerTrace>,
    /// Decoders: the probability of each vocabulary entry being the next token.
    pub next_token_probs: Option<Vec<f32>>,
}

impl Trace {
    /// The `k` most likely next tokens as (token id, probability), most likely first.
    pub fn top_next_tokens(&self, k: usize) -> Vec<(u32, f32)> {
        let Some(probs) = &self.next_token_probs else {
            return Vec::new();
        };
        let mut order: Vec<u32> = (0..probs.len() as u32).collect();
        order.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]));
        order
            .into_iter()
            .take(k)
            .map(|i| (i, probs[i as usize]))
            .collect()
    }
}
