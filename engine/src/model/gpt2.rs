//! GPT-2: a pre-norm causal decoder with learned positions and a fused QKV projection.

use super::TokenInput;
use super::bert::activate;
use super::config::ModelConfig;
use super::layers::{LayerNorm, Linear, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::residual::residual_figures;
use super::weights::WeightSource;
use crate::error::Result;
use crate::trace::Trace;
use burn::tensor::{Device, Tensor};

struct Gpt2Layer {
    ln_1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    proj: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    fc_proj: Linear,
}

pub struct Gpt2 {
    config: ModelConfig,
    wte: Tensor<2>,
    wpe: Tensor<2>,
    layers: Vec<Gpt2Layer>,
    ln_f: LayerNorm,
    /// The token embedding, transposed once for the output head (GPT-2 ties them).
    lm_head: Tensor<2>,
}

impl Gpt2 {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let p = if w.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let eps = config.norm_eps;
        let hidden = config.hidden;
        // GPT-2's Conv1D stores weights [in, out]: no transpose needed.
        let conv = |name: &str| -> Result<Linear> {
            let weight = w.tensor(&format!("{name}.weight"))?;
            let bias = w.tensor(&format!("{name}.bias"))?;
            Ok(Linear::from_host(&weight, Some(&bias), device))
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}h.{i}");
            let qkv_w = w.tensor(&format!("{l}.attn.c_attn.weight"))?;
            let qkv_b = w.tensor(&format!("{l}.attn.c_attn.bias"))?;
            let part = |n: usize| {
                Linear::from_host(
                    &qkv_w.cols(n * hidden, hidden),
                    Some(&qkv_b.cols(n * hidden, hidden)),
                    device,
                )
            };
            layers.push(Gpt2Layer {
                ln_1: LayerNorm::load(w, &format!("{l}.ln_1"), eps, device)?,
                query: part(0),
                key: part(1),
                value: part(2),
                proj: conv(&format!("{l}.attn.c_proj"))?,
                ln_2: LayerNorm::load(w, &format!("{l}.ln_2"), eps, device)?,
                fc: conv(&format!("{l}.mlp.c_fc"))?,
                fc_proj: conv(&format!("{l}.mlp.c_proj"))?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let wte_host = w.tensor(&format!("{p}wte.weight"))?;
        let head_host = if w.contains("lm_head.weight") && !config.tie_word_embeddings {
            w.tensor("lm_head.weight")?
        } else {
            wte_host.clone()
        };
        Ok(Self {
            config: config.clone(),
            wte: upload(&wte_host, device),
            wpe: upload(&w.tensor(&format!("{p}wpe.weight"))?, device),
            layers,
            ln_f: LayerNorm::load(w, &format!("{p}ln_f"), eps, device)?,
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
        let positions = packing.positions();
        let mut x = embed(&self.wte, &input.ids, device) + embed(&self.wpe, &positions, device);
        let mask = packing.mask(true, None, None);
        let heads = self.config.heads;
        let mut traces = Vec::with_capacity(self.layers.len());
        for (index, (layer, attention)) in self
            .layers
            .iter()
            .zip(&self.config.layer_attention)
            .enumerate()
        {
            if !packing.enters_layer(index, &mut x)? {
                continue;
            }
            let h = layer.ln_1.forward(x.clone());
            let q = split_heads(layer.query.forward(h.clone()), heads);
            let k = split_heads(layer.key.forward(h.clone()), heads);
            let v = split_heads(layer.value.forward(h), heads);
            let (context, mut trace) = attend(
                q,
                k,
                v,
                &mask,
                attention,
                packing.keep_attention,
                packing.layer_edits(index, self.config.heads).as_ref(),
                packing.tape.as_ref(),
            );
            x = x + layer.proj.forward(context);
            let h = layer.ln_2.forward(x.clone());
            x = x + layer
                .fc_proj
                .forward(activate(self.config.activation, layer.fc.forward(h)));
            trace.residual = residual_figures(&x, &packing.lengths)?;
            traces.push(trace);
        }
        if packing.stops_early(self.layers.len(), &x) {
            return packing.split(traces, None);
        }
        let last = self.ln_f.forward(packing.last_rows(x, device));
        packing.split(traces, Some(last.matmul(self.lm_head.clone())))
    }
}
