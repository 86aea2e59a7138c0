//! The Llama family (llama, mistral, qwen2, SmolLM): RMSNorm, RoPE, grouped-query attention,
//! SwiGLU, optionally tied embeddings.

use super::TokenInput;
use super::config::ModelConfig;
use super::cpu_kernels::silu;
use super::layers::{Linear, RmsNorm, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::weights::WeightSource;
use crate::error::Result;
use crate::trace::Trace;
use burn::tensor::{Device, Tensor, TensorData};

struct LlamaLayer {
    input_norm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    config: ModelConfig,
    embed_tokens: Tensor<2>,
    layers: Vec<LlamaLayer>,
    norm: RmsNorm,
    /// [hidden, vocab]
    lm_head: Tensor<2>,
}

impl Llama {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let eps = config.norm_eps;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("model.layers.{i}");
            let lin =
                |name: &str, bias: bool| Linear::load(w, &format!("{l}.{name}"), bias, device);
            let qkv_bias = config.attention_bias;
            layers.push(LlamaLayer {
                input_norm: RmsNorm::load(w, &format!("{l}.input_layernorm"), eps, device)?,
                q_proj: lin("self_attn.q_proj", qkv_bias)?,
                k_proj: lin("self_attn.k_proj", qkv_bias)?,
                v_proj: lin("self_attn.v_proj", qkv_bias)?,
                o_proj: lin("self_attn.o_proj", false)?,
                post_norm: RmsNorm::load(w, &format!("{l}.post_attention_layernorm"), eps, device)?,
                gate: lin("mlp.gate_proj", false)?,
                up: lin("mlp.up_proj", false)?,
                down: lin("mlp.down_proj", false)?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let embed_host = w.tensor("model.embed_tokens.weight")?;
        let head_host = if w.contains("lm_head.weight") && !config.tie_word_embeddings {
            w.tensor("lm_head.weight")?
        } else {
            embed_host.clone()
        };
        Ok(Self {
            config: config.clone(),
            embed_tokens: upload(&embed_host, device),
            layers,
            norm: RmsNorm::load(w, "model.norm", eps, device)?,
            lm_head: upload(&head_host.transposed(), device),
        })
    }

    /// cos and sin tables [1, T, d] for Hugging Face's rotate-half RoPE, computed in f32 as
    /// transformers does so that q and k match it bit for bit as far as possible.
    fn rope_tables(&self, positions: &[u32], device: &Device) -> (Tensor<3>, Tensor<3>) {
        let t = positions.len();
        let d = self.config.head_dim;
        let half = d / 2;
        let base = self.config.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32))
            .collect();
        let mut cos = Vec::with_capacity(t * d);
        let mut sin = Vec::with_capacity(t * d);
        for &pos in positions {
            for j in 0..d {
                let angle = pos as f32 * inv_freq[j % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, vec![1, t, d]), device);
        (table(cos), table(sin))
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
        let (cos, sin) = self.rope_tables(&packing.positions(), device);
        let rotate = |x: Tensor<3>| -> Tensor<3> {
            let half = cfg.head_dim / 2;
            let first = x.clone().narrow(2, 0, half);
            let second = x.clone().narrow(2, half, half);
            let rotated = Tensor::cat(vec![second.neg(), first], 2);
            x * cos.clone() + rotated * sin.clone()
        };
        let mut x = embed(&self.embed_tokens, &input.ids, device);
        let mut masks = MaskCache::default();
        let mut traces = Vec::with_capacity(self.layers.len());
        for (layer, attention) in self.layers.iter().zip(&cfg.layer_attention) {
            let mask = masks.get(packing, attention.window, device);
            let h = layer.input_norm.forward(x.clone());
            let q = rotate(split_heads(layer.q_proj.forward(h.clone()), cfg.heads));
            let k = rotate(split_heads(layer.k_proj.forward(h.clone()), cfg.kv_heads));
            let v = split_heads(layer.v_proj.forward(h), cfg.kv_heads);
            let (context, trace) = attend(q, k, v, mask.as_ref(), attention);
            traces.push(trace);
            x = x + layer.o_proj.forward(context);
            let h = layer.post_norm.forward(x.clone());
            let gated = silu(layer.gate.forward(h.clone())) * layer.up.forward(h);
            x = x + layer.down.forward(gated);
        }
        let last = self.norm.forward(packing.last_rows(x, device));
        packing.split(traces, Some(last.matmul(self.lm_head.clone())))
    }
}

/// The causal masks of one pass, one per sliding-window size its layers use, each built once.
#[derive(Default)]
pub struct MaskCache {
    masks: Vec<(Option<usize>, Option<Tensor<2>>)>,
}

impl MaskCache {
    pub fn get(
        &mut self,
        packing: &Packing,
        window: Option<usize>,
        device: &Device,
    ) -> Option<Tensor<2>> {
        if let Some((_, mask)) = self.masks.iter().find(|(w, _)| *w == window) {
            return mask.clone();
        }
        let mask = packing.mask(true, None, window, device);
        self.masks.push((window, mask.clone()));
        mask
    }
}
