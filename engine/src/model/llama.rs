//! The Llama family (llama, mistral, qwen2, qwen3, SmolLM/SmolLM3, phi3, OLMo 2): RMSNorm, RoPE
//! (with its scalings, partial rotation, and layers without it), grouped-query attention with
//! optional sliding windows and q/k norms, a gated MLP, optionally tied embeddings. OLMo 2 moves
//! the norms from before attention and the MLP to after them.
//! What each model type reads from its config is in [`super::llama_config`].

use super::TokenInput;
use super::bert::activate;
use super::config::ModelConfig;
use super::cpu_kernels::{MaskTile, attention_softmax};
use super::key_mask::KeyMask;
use super::layers::{
    Linear, RmsNorm, attend, embed, expand_kv, expect_shape, merge_heads, split_heads, upload,
};
use super::llama_config::LlamaOptions;
use super::packing::Packing;
use super::residual::residual_figures;
use super::rope::rotate;
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::trace::Trace;
use burn::tensor::{Device, Tensor};

/// q, k and v: three projections, or Phi-3's one fused `qkv_proj` cut into three.
struct Projections {
    q: Linear,
    k: Linear,
    v: Linear,
}

/// Norms of q and k, before RoPE.
enum QkNorm {
    /// Qwen3: over each head's d values.
    PerHead(RmsNorm, RmsNorm),
    /// OLMo 2: over the whole projection, before the split into heads.
    Whole(RmsNorm, RmsNorm),
}

struct LlamaLayer {
    /// Before attention; OLMo 2 has none.
    input_norm: Option<RmsNorm>,
    attn: Projections,
    qk_norm: Option<QkNorm>,
    o_proj: Linear,
    /// `post_attention_layernorm`: before the MLP, or in OLMo 2 on the attention output before
    /// the residual sum.
    post_norm: RmsNorm,
    /// OLMo 2's `post_feedforward_layernorm`: on the MLP output before the residual sum.
    post_ff_norm: Option<RmsNorm>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    config: ModelConfig,
    options: LlamaOptions,
    embed_tokens: Tensor<2>,
    layers: Vec<LlamaLayer>,
    norm: RmsNorm,
    /// [hidden, vocab]
    lm_head: Tensor<2>,
}

/// Rows `start..start + len` of a Hugging Face `nn.Linear` weight [out, in], as [in, out].
fn rows(w: &HostTensor, start: usize, len: usize) -> HostTensor {
    let cols = w.shape[1];
    HostTensor::new(
        vec![len, cols],
        w.data[start * cols..(start + len) * cols].to_vec(),
    )
    .transposed()
}

impl Llama {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let options = config.llama.clone().ok_or_else(|| EngineError::BadConfig {
            path: w.path().to_path_buf(),
            reason: format!("{} is not a Llama-family config", config.model_type),
        })?;
        let eps = config.norm_eps;
        let (q_width, kv_width) = (
            config.heads * config.head_dim,
            config.kv_heads * config.head_dim,
        );
        let (hidden, inner) = (config.hidden, config.intermediate);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("model.layers.{i}");
            let lin = |name: &str, bias: bool, shape: [usize; 2]| {
                Linear::load_shaped(w, &format!("{l}.{name}"), bias, shape, device)
            };
            let norm = |name: &str, len: usize| {
                RmsNorm::load_shaped(w, &format!("{l}.{name}"), len, eps, device)
            };
            let attn = if options.fused {
                let name = format!("{l}.self_attn.qkv_proj.weight");
                let qkv = w.tensor(&name)?;
                expect_shape(w, &name, &qkv, &[q_width + 2 * kv_width, hidden])?;
                Projections {
                    q: Linear::from_host(&rows(&qkv, 0, q_width), None, device),
                    k: Linear::from_host(&rows(&qkv, q_width, kv_width), None, device),
                    v: Linear::from_host(&rows(&qkv, q_width + kv_width, kv_width), None, device),
                }
            } else {
                Projections {
                    q: lin("self_attn.q_proj", options.qkv_bias, [q_width, hidden])?,
                    k: lin("self_attn.k_proj", options.qkv_bias, [kv_width, hidden])?,
                    v: lin("self_attn.v_proj", options.qkv_bias, [kv_width, hidden])?,
                }
            };
            let (gate, up) = if options.fused {
                let name = format!("{l}.mlp.gate_up_proj.weight");
                let gate_up = w.tensor(&name)?;
                expect_shape(w, &name, &gate_up, &[2 * inner, hidden])?;
                (
                    Linear::from_host(&rows(&gate_up, 0, inner), None, device),
                    Linear::from_host(&rows(&gate_up, inner, inner), None, device),
                )
            } else {
                (
                    lin("mlp.gate_proj", options.mlp_bias, [inner, hidden])?,
                    lin("mlp.up_proj", options.mlp_bias, [inner, hidden])?,
                )
            };
            let head_dim = config.head_dim;
            let qk_norm = if options.post_norms {
                Some(QkNorm::Whole(
                    norm("self_attn.q_norm", q_width)?,
                    norm("self_attn.k_norm", kv_width)?,
                ))
            } else if options.qk_norm {
                Some(QkNorm::PerHead(
                    norm("self_attn.q_norm", head_dim)?,
                    norm("self_attn.k_norm", head_dim)?,
                ))
            } else {
                None
            };
            layers.push(LlamaLayer {
                input_norm: if options.post_norms {
                    None
                } else {
                    Some(norm("input_layernorm", hidden)?)
                },
                attn,
                qk_norm,
                o_proj: lin("self_attn.o_proj", options.o_bias, [hidden, q_width])?,
                post_norm: norm("post_attention_layernorm", hidden)?,
                post_ff_norm: if options.post_norms {
                    Some(norm("post_feedforward_layernorm", hidden)?)
                } else {
                    None
                },
                gate,
                up,
                down: lin("mlp.down_proj", options.mlp_bias, [hidden, inner])?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let embed_host = w.tensor("model.embed_tokens.weight")?;
        expect_shape(
            w,
            "model.embed_tokens.weight",
            &embed_host,
            &[config.vocab, hidden],
        )?;
        let head_host = if w.contains("lm_head.weight") && !config.tie_word_embeddings {
            let head = w.tensor("lm_head.weight")?;
            expect_shape(w, "lm_head.weight", &head, &[config.vocab, hidden])?;
            head
        } else {
            embed_host.clone()
        };
        Ok(Self {
            config: config.clone(),
            options,
            embed_tokens: upload(&embed_host, device),
            layers,
            norm: RmsNorm::load_shaped(w, "model.norm", hidden, eps, device)?,
            lm_head: upload(&head_host.transposed(), device),
        })
    }

    /// The inputs packed into `input` (see [`Packing`]; one input is a packing of one): one
    /// trace each.
    pub fn forward_packed(
        &self,
        input: &TokenInput,
        packing: &Packing,
        device: &Device,
    ) -> Result<Vec<Trace>> {
        let cfg = &self.config;
        let (cos, sin) = self.options.rope.tables(packing, device);
        let mut x = embed(&self.embed_tokens, &input.ids, device);
        let mut traces = Vec::with_capacity(self.layers.len());
        for (index, (layer, attention)) in self.layers.iter().zip(&cfg.layer_attention).enumerate()
        {
            if !packing.enters_layer(index, &mut x)? {
                continue;
            }
            let mask = packing.mask(true, None, attention.window);
            let (q, k, v) = layer.qkv(x.clone(), cfg, attention.rope.then_some((&cos, &sin)));
            let (context, mut trace) = attend(
                q,
                k,
                v,
                &mask,
                attention,
                packing.keep_attention,
                packing.layer_edits(index, cfg.heads).as_ref(),
                packing.tape.as_ref(),
            );
            x = x + layer.attention_output(context);
            x = layer.feed_forward(x, cfg);
            trace.residual = residual_figures(&x, &packing.lengths)?;
            traces.push(trace);
        }
        if packing.stops_early(self.layers.len(), &x) {
            return packing.split(traces, None);
        }
        let last = self.norm.forward(packing.last_rows(x, device));
        packing.split(traces, Some(last.matmul(self.lm_head.clone())))
    }
}

impl LlamaLayer {
    /// q, k and v of the normed input, [heads or kv_heads, T, d]: projected, per-head q/k
    /// norms applied, rotated by `rope` (cos, sin) where the layer uses RoPE.
    fn qkv(
        &self,
        x: Tensor<2>,
        cfg: &ModelConfig,
        rope: Option<(&Tensor<3>, &Tensor<3>)>,
    ) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let h = match &self.input_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let mut q = self.attn.q.forward(h.clone());
        let mut k = self.attn.k.forward(h.clone());
        if let Some(QkNorm::Whole(q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(q);
            k = k_norm.forward(k);
        }
        let mut q = split_heads(q, cfg.heads);
        let mut k = split_heads(k, cfg.kv_heads);
        let v = split_heads(self.attn.v.forward(h), cfg.kv_heads);
        if let Some(QkNorm::PerHead(q_norm, k_norm)) = &self.qk_norm {
            q = per_head(q_norm, q);
            k = per_head(k_norm, k);
        }
        if let Some((cos, sin)) = rope {
            q = rotate(q, cos, sin);
            k = rotate(k, cos, sin);
        }
        (q, k, v)
    }

    /// What attention adds to the residual stream: the projected context, normed in OLMo 2.
    fn attention_output(&self, context: Tensor<2>) -> Tensor<2> {
        let out = self.o_proj.forward(context);
        match self.post_ff_norm {
            Some(_) => self.post_norm.forward(out),
            None => out,
        }
    }

    /// The residual stream after the gated feed-forward block: normed before it, or (OLMo 2)
    /// its output normed.
    fn feed_forward(&self, x: Tensor<2>, cfg: &ModelConfig) -> Tensor<2> {
        let mlp = |h: Tensor<2>| {
            let gated = activate(cfg.activation, self.gate.forward(h.clone())) * self.up.forward(h);
            self.down.forward(gated)
        };
        match &self.post_ff_norm {
            Some(post_ff_norm) => x.clone() + post_ff_norm.forward(mlp(x)),
            None => x.clone() + mlp(self.post_norm.forward(x)),
        }
    }
}

/// Each layer's keys and values so far, [kv_heads, T, d] (after RoPE), for decoding a token at a
/// time without running the prompt again.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor<3>, Tensor<3>)>,
}

impl KvCache {
    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Llama {
    /// Whether decoding with a KV cache gives what a full pass gives up to `len` tokens: not
    /// with a RoPE scaling whose frequencies depend on the length.
    pub fn caches_up_to(&self, len: usize) -> bool {
        self.options.rope.static_over(len)
    }

    /// Runs `ids` at the positions after what `cache` holds, appending their keys and values,
    /// and returns the next-token logits after the last of them, [vocab]. The same computation
    /// as a full pass over everything so far, without capture.
    pub fn decode(&self, ids: &[u32], cache: &mut KvCache, device: &Device) -> Result<Tensor<1>> {
        let cfg = &self.config;
        let start = cache.len();
        let n = ids.len();
        let total = start + n;
        let (cos, sin) = self.options.rope.tables_at(start..total, total, device);
        let mut x = embed(&self.embed_tokens, ids, device);
        for (index, (layer, attention)) in self.layers.iter().zip(&cfg.layer_attention).enumerate()
        {
            let (q, k, v) = layer.qkv(x.clone(), cfg, attention.rope.then_some((&cos, &sin)));
            let (keys, values) = match cache.layers.get(index) {
                Some((ck, cv)) => (
                    Tensor::cat(vec![ck.clone(), k], 1),
                    Tensor::cat(vec![cv.clone(), v], 1),
                ),
                None => (k, v),
            };
            if index < cache.layers.len() {
                cache.layers[index] = (keys.clone(), values.clone());
            } else {
                cache.layers.push((keys.clone(), values.clone()));
            }
            let mask = KeyMask::new(&[total], true, None, attention.window);
            let context = attend_rows(q, keys, values, &mask, start..total, attention);
            x = x + layer.attention_output(context);
            x = layer.feed_forward(x, cfg);
        }
        let last = self.norm.forward(x.slice([n - 1..n, 0..cfg.hidden]));
        Ok(last.matmul(self.lm_head.clone()).reshape([cfg.vocab]))
    }
}

/// Attention of the queries at positions `rows` over every key so far: the merged context
/// [rows, heads·d].
fn attend_rows(
    q: Tensor<3>,
    keys: Tensor<3>,
    values: Tensor<3>,
    mask: &KeyMask,
    rows: std::ops::Range<usize>,
    attention: &crate::trace::LayerAttention,
) -> Tensor<2> {
    let heads = q.dims()[0];
    let total = keys.dims()[1];
    let expand = |x: Tensor<3>| expand_kv(x, heads);
    let logits = q.matmul(expand(keys).swap_dims(1, 2));
    let tile = MaskTile::of(mask, rows, 0..total);
    let (p, _) = attention_softmax(logits, attention.scale, attention.softcap, tile.as_ref());
    merge_heads(p.matmul(expand(values)))
}

/// An RMSNorm over the last dimension of each head: [heads, T, d].
fn per_head(norm: &RmsNorm, x: Tensor<3>) -> Tensor<3> {
    let [heads, t, d] = x.dims();
    norm.forward(x.reshape([heads * t, d]))
        .reshape([heads, t, d])
}
