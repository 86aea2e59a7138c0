//! The BERT family (BERT, MiniLM, ...): a post-norm encoder with learned positions and segments.

use super::TokenInput;
use super::config::{Activation, ModelConfig};
use super::cpu_kernels::{gelu, silu};
use super::layers::{LayerNorm, Linear, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::weights::WeightSource;
use crate::error::Result;
use crate::trace::Trace;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

pub struct Bert {
    config: ModelConfig,
    word: burn::tensor::Tensor<2>,
    position: Tensor<2>,
    token_type: Option<Tensor<2>>,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
}

/// Bare `BertModel` checkpoints have no prefix; task heads put the encoder under `bert.`.
fn prefix(w: &dyn WeightSource) -> &'static str {
    if w.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

impl Bert {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let p = prefix(w);
        let eps = config.norm_eps;
        let emb = |name: &str| -> Result<Tensor<2>> {
            Ok(upload(
                &w.tensor(&format!("{p}embeddings.{name}.weight"))?,
                device,
            ))
        };
        let token_type = if w.contains(&format!("{p}embeddings.token_type_embeddings.weight")) {
            Some(emb("token_type_embeddings")?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}encoder.layer.{i}");
            let lin = |name: &str| Linear::load(w, &format!("{l}.{name}"), true, device);
            layers.push(BertLayer {
                query: lin("attention.self.query")?,
                key: lin("attention.self.key")?,
                value: lin("attention.self.value")?,
                attn_out: lin("attention.output.dense")?,
                attn_norm: LayerNorm::load(
                    w,
                    &format!("{l}.attention.output.LayerNorm"),
                    eps,
                    device,
                )?,
                intermediate: lin("intermediate.dense")?,
                output: lin("output.dense")?,
                out_norm: LayerNorm::load(w, &format!("{l}.output.LayerNorm"), eps, device)?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        Ok(Self {
            config: config.clone(),
            word: emb("word_embeddings")?,
            position: emb("position_embeddings")?,
            token_type,
            embed_norm: LayerNorm::load(w, &format!("{p}embeddings.LayerNorm"), eps, device)?,
            layers,
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
        let positions = packing.positions();
        let mut x =
            embed(&self.word, &input.ids, device) + embed(&self.position, &positions, device);
        if let Some(types) = &self.token_type {
            x = x + embed(types, &input.type_ids, device);
        }
        let mut x = self.embed_norm.forward(x);
        let mask = packing.mask(false, input.key_valid.as_deref(), None, device);
        let heads = self.config.heads;
        let mut traces = Vec::with_capacity(self.layers.len());
        for (layer, attention) in self.layers.iter().zip(&self.config.layer_attention) {
            let q = split_heads(layer.query.forward(x.clone()), heads);
            let k = split_heads(layer.key.forward(x.clone()), heads);
            let v = split_heads(layer.value.forward(x.clone()), heads);
            let (context, trace) = attend(q, k, v, mask.as_ref(), attention);
            traces.push(trace);
            x = layer.attn_norm.forward(layer.attn_out.forward(context) + x);
            let hidden = activate(
                self.config.activation,
                layer.intermediate.forward(x.clone()),
            );
            x = layer.out_norm.forward(layer.output.forward(hidden) + x);
        }
        packing.split(traces, None)
    }
}

pub fn activate(activation: Activation, x: Tensor<2>) -> Tensor<2> {
    match activation {
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => burn::tensor::activation::gelu_approximate(x),
        Activation::Relu => relu(x),
        Activation::Silu => silu(x),
    }
}
