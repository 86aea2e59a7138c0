//! The BERT family: BERT and MiniLM, RoBERTa and XLM-RoBERTa (positions offset by the padding
//! index), DistilBERT (its own weight and config names): post-norm encoders with learned (or
//! DistilBERT's sinusoidal) absolute positions.

use super::TokenInput;
use super::config::{Activation, ModelConfig};
use super::cpu_kernels::{gelu, silu};
use super::layers::{LayerNorm, Linear, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::residual::residual_figures;
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::trace::Trace;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};
use serde_json::Value;

/// Which member of the family a checkpoint is: they differ in weight names and positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Bert,
    /// RoBERTa and XLM-RoBERTa.
    Roberta,
    DistilBert,
}

/// What a BERT-family config.json says beyond the common fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderOptions {
    pub flavor: Flavor,
    /// RoBERTa's `pad_token_id`: pad tokens sit at this position and real tokens count from the
    /// next one, as transformers' `create_position_ids_from_input_ids` numbers them.
    pub padding_idx: Option<u32>,
    /// DistilBERT's `sinusoidal_pos_embds`: the position table is fixed sinusoids (used as
    /// stored in the checkpoint, as transformers does; computed when the checkpoint lacks it).
    pub sinusoidal_positions: bool,
}

impl EncoderOptions {
    /// Reads and checks the family's own keys; a key that would change the computation and is
    /// not implemented is refused by name.
    pub fn from_json(json: &Value, model_type: &str) -> std::result::Result<Self, String> {
        let flavor = match model_type {
            "roberta" | "xlm-roberta" => Flavor::Roberta,
            "distilbert" => Flavor::DistilBert,
            _ => Flavor::Bert,
        };
        let flag = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
        if flag("is_decoder") {
            return Err(format!(
                "is_decoder true (causal self-attention) is not supported for {model_type}; \
                 supported: false"
            ));
        }
        if flag("add_cross_attention") {
            return Err(format!(
                "add_cross_attention true is not supported for {model_type}; supported: false"
            ));
        }
        let padding_idx = match flavor {
            // transformers' RobertaEmbeddings always offsets by the pad id (default 1).
            Flavor::Roberta => Some(match json.get("pad_token_id") {
                None | Some(Value::Null) => 1,
                Some(v) => v
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("pad_token_id {v} is not a token id"))?,
            }),
            _ => None,
        };
        Ok(Self {
            flavor,
            padding_idx,
            sinusoidal_positions: flavor == Flavor::DistilBert && flag("sinusoidal_pos_embds"),
        })
    }

    /// How many tokens fit in `table` position embeddings: RoBERTa's first real position is
    /// padding_idx + 1.
    pub fn usable_positions(&self, table: usize) -> usize {
        match self.padding_idx {
            Some(pad) => table.saturating_sub(pad as usize + 1),
            None => table,
        }
    }
}

/// DistilBERT's config.json under the common names (`dim` is the hidden size, `n_heads`,
/// `n_layers`, `hidden_dim`, `activation`), with DistilBertConfig's defaults for absent keys and
/// its fixed LayerNorm epsilon (1e-12, not configurable in transformers).
pub fn distilbert_json(json: &Value) -> Value {
    let mut out = json.clone();
    let get = |key: &str, default: Value| {
        json.get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let renamed = [
        ("hidden_size", get("dim", 768.into())),
        ("num_attention_heads", get("n_heads", 12.into())),
        ("num_hidden_layers", get("n_layers", 6.into())),
        ("intermediate_size", get("hidden_dim", 3072.into())),
        ("hidden_act", get("activation", "gelu".into())),
        ("vocab_size", get("vocab_size", 30522.into())),
        (
            "max_position_embeddings",
            get("max_position_embeddings", 512.into()),
        ),
        ("layer_norm_eps", 1e-12.into()),
    ];
    if let Value::Object(map) = &mut out {
        for (key, value) in renamed {
            map.insert(key.into(), value);
        }
    }
    out
}

/// transformers' `_create_sinusoidal_embeddings`: sin at even and cos at odd columns of
/// pos / 10000^(2·(j/2)/dim), computed in f64 and stored as f32.
pub fn sinusoidal_table(positions: usize, dim: usize) -> HostTensor {
    let mut data = Vec::with_capacity(positions * dim);
    for pos in 0..positions {
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            data.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    HostTensor::new(vec![positions, dim], data)
}

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
    options: EncoderOptions,
    word: burn::tensor::Tensor<2>,
    position: Tensor<2>,
    token_type: Option<Tensor<2>>,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
}

/// Bare checkpoints have no prefix; task heads put the encoder under the family's name.
fn prefix(w: &dyn WeightSource) -> &'static str {
    ["bert.", "roberta.", "distilbert."]
        .into_iter()
        .find(|p| w.contains(&format!("{p}embeddings.word_embeddings.weight")))
        .unwrap_or("")
}

/// A layer's weight names: BERT's (RoBERTa's are the same) or DistilBERT's.
struct LayerNames {
    stack: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attn_out: &'static str,
    attn_norm: &'static str,
    intermediate: &'static str,
    output: &'static str,
    out_norm: &'static str,
}

const BERT_NAMES: LayerNames = LayerNames {
    stack: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    out_norm: "output.LayerNorm",
};

const DISTILBERT_NAMES: LayerNames = LayerNames {
    stack: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    out_norm: "output_layer_norm",
};

impl Bert {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let options = config.encoder.clone().unwrap_or(EncoderOptions {
            flavor: Flavor::Bert,
            padding_idx: None,
            sinusoidal_positions: false,
        });
        let names = match options.flavor {
            Flavor::DistilBert => &DISTILBERT_NAMES,
            Flavor::Bert | Flavor::Roberta => &BERT_NAMES,
        };
        let p = prefix(w);
        let eps = config.norm_eps;
        let emb = |name: &str| -> Result<Tensor<2>> {
            Ok(upload(
                &w.tensor(&format!("{p}embeddings.{name}.weight"))?,
                device,
            ))
        };
        let token_type = if options.flavor != Flavor::DistilBert
            && w.contains(&format!("{p}embeddings.token_type_embeddings.weight"))
        {
            Some(emb("token_type_embeddings")?)
        } else {
            None
        };
        let position_name = format!("{p}embeddings.position_embeddings.weight");
        let position = if options.sinusoidal_positions && !w.contains(&position_name) {
            let table = sinusoidal_table(
                config.max_positions + options.padding_idx.map_or(0, |p| p as usize + 1),
                config.hidden,
            );
            upload(&table, device)
        } else {
            emb("position_embeddings")?
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}{}.{i}", names.stack);
            let lin = |name: &str| Linear::load(w, &format!("{l}.{name}"), true, device);
            let norm = |name: &str| LayerNorm::load(w, &format!("{l}.{name}"), eps, device);
            layers.push(BertLayer {
                query: lin(names.query)?,
                key: lin(names.key)?,
                value: lin(names.value)?,
                attn_out: lin(names.attn_out)?,
                attn_norm: norm(names.attn_norm)?,
                intermediate: lin(names.intermediate)?,
                output: lin(names.output)?,
                out_norm: norm(names.out_norm)?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let table_rows = position.dims()[0];
        let needed = options.padding_idx.map_or(0, |p| p as usize + 1) + config.max_positions;
        if table_rows < needed {
            return Err(EngineError::BadTensor {
                path: w.path().to_path_buf(),
                name: position_name,
                reason: format!("{table_rows} positions, but the config asks for {needed}"),
            });
        }
        Ok(Self {
            config: config.clone(),
            options,
            word: emb("word_embeddings")?,
            position,
            token_type,
            embed_norm: LayerNorm::load(w, &format!("{p}embeddings.LayerNorm"), eps, device)?,
            layers,
        })
    }

    /// Every token's position id. BERT and DistilBERT count from 0 within each packed input;
    /// RoBERTa counts only non-pad tokens, from padding_idx + 1, and puts pad tokens at
    /// padding_idx (transformers' `create_position_ids_from_input_ids`).
    fn positions(&self, ids: &[u32], packing: &Packing) -> Vec<u32> {
        let Some(pad) = self.options.padding_idx else {
            return packing.positions();
        };
        let mut out = Vec::with_capacity(ids.len());
        for (start, &len) in packing.starts().into_iter().zip(&packing.lengths) {
            let mut seen = 0;
            for &id in &ids[start..start + len] {
                if id == pad {
                    out.push(pad);
                } else {
                    seen += 1;
                    out.push(pad + seen);
                }
            }
        }
        out
    }

    /// The inputs packed into `input` (see [`Packing`]; one input is a packing of one): one
    /// trace each.
    pub fn forward_packed(
        &self,
        input: &TokenInput,
        packing: &Packing,
        device: &Device,
    ) -> Result<Vec<Trace>> {
        let positions = self.positions(&input.ids, packing);
        let mut x =
            embed(&self.word, &input.ids, device) + embed(&self.position, &positions, device);
        if let Some(types) = &self.token_type {
            // RoBERTa's tokenizers give no segment ids: transformers uses segment 0 throughout.
            let zeros;
            let type_ids = if self.options.flavor == Flavor::Roberta {
                zeros = vec![0; input.ids.len()];
                &zeros
            } else {
                &input.type_ids
            };
            let rows = types.dims()[0];
            if let Some(&bad) = type_ids.iter().find(|&&t| t as usize >= rows) {
                return Err(EngineError::BadInput {
                    index: 0,
                    reason: format!("token type id {bad} is outside the model's {rows} types"),
                });
            }
            x = x + embed(types, type_ids, device);
        }
        let mut x = self.embed_norm.forward(x);
        if let Some(tape) = &packing.tape {
            tape.record_embedded(&x);
        }
        let mask = packing.mask(false, input.key_valid.as_deref(), None);
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
            let q = split_heads(layer.query.forward(x.clone()), heads);
            let k = split_heads(layer.key.forward(x.clone()), heads);
            let v = split_heads(layer.value.forward(x.clone()), heads);
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
            x = layer.attn_norm.forward(layer.attn_out.forward(context) + x);
            let hidden = activate(
                self.config.activation,
                layer.intermediate.forward(x.clone()),
            );
            x = layer.out_norm.forward(layer.output.forward(hidden) + x);
            trace.residual = residual_figures(&x, &packing.lengths)?;
            traces.push(trace);
        }
        if packing.stops_early(self.layers.len(), &x) {
            return packing.split(traces, None);
        }
        if let Some(tape) = &packing.tape {
            tape.record_hidden(&x);
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
        Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
    }
}
