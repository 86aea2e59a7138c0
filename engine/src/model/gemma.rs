//! The Gemma family: `gemma` (1), `gemma2`, `gemma3_text`, and the text tower of a `gemma3`
//! folder (the config under `text_config`, the weights under `language_model.`), computed as
//! transformers' eager implementation does.
//!
//! What sets Gemma apart from Llama: RMSNorm multiplies by (1 + w); the embedding is scaled by
//! sqrt(hidden) (rounded to f32, as transformers stores it); a GELU-tanh GLU. Gemma 2 and 3 add
//! a norm after attention and around the feed-forward, the logit scale
//! `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`, sliding-window layers interleaved with
//! full ones, and final-logit soft-capping; Gemma 2 soft-caps the attention logits; Gemma 3
//! normalises q and k per head and rotates sliding layers with their own RoPE base.
//!
//! Config keys are read here, with transformers' class defaults where a key is absent; every
//! key or value that would change the computation and is not implemented is refused by name.

use super::TokenInput;
use super::bert::activate;
use super::config::{Activation, Architecture, ModelConfig};
use super::layers::{Linear, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::residual::residual_figures;
use super::rope;
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::trace::{LayerAttention, Trace};
use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};
use std::path::Path;

/// Which Gemma: the layer layout and the config keys differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    One,
    Two,
    Three,
}

/// One RoPE table: `inv_freq_i = 1 / theta^(2i/d) / factor` (factor 1 for `default`, the
/// `linear` scaling's factor otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub factor: f64,
}

/// What the Gemma forward pass needs beyond [`ModelConfig`]'s common fields.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub generation: Generation,
    /// A `gemma3` folder: the text tower of Gemma3ForConditionalGeneration.
    pub multimodal: bool,
    /// Per layer: whether it uses the sliding window (Gemma 2 and 3).
    pub sliding: Vec<bool>,
    /// RoPE of full-attention layers (of every layer before Gemma 3).
    pub global_rope: Rope,
    /// RoPE of sliding layers (Gemma 3's `rope_local_base_freq`); the global one before.
    pub local_rope: Rope,
    /// `final_logit_softcapping`: c·tanh(logits / c) before the softmax over the vocabulary.
    pub final_softcap: Option<f32>,
    /// sqrt(hidden) as transformers multiplies the embeddings by it: a float32 number.
    pub embed_scale: f32,
}

impl GemmaConfig {
    pub fn rope_of_layer(&self, layer: usize) -> Rope {
        if self.sliding[layer] && self.generation == Generation::Three {
            self.local_rope
        } else {
            self.global_rope
        }
    }
}

/// The model types this file computes.
pub const MODEL_TYPES: &[&str] = &["gemma", "gemma2", "gemma3_text", "gemma3"];

/// transformers' defaults for the keys a config may leave out (GemmaConfig, Gemma2Config,
/// Gemma3TextConfig).
fn class_defaults(generation: Generation) -> Value {
    match generation {
        Generation::One => json!({
            "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
            "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false,
        }),
        Generation::Two => json!({
            "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
        }),
        Generation::Three => json!({
            "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "final_logit_softcapping": null, "attn_logit_softcapping": null,
            "sliding_window_pattern": 6,
        }),
    }
}

/// Reads one Gemma config: the text model's keys, falling back on the class's defaults, and
/// naming each key as it appears in the file (`text_config.` inside a `gemma3` folder).
struct Keys<'a> {
    text: &'a Value,
    defaults: Value,
    prefix: &'static str,
    path: &'a Path,
}

impl Keys<'_> {
    /// The key's value: the file's (an explicit null included), else the default, else null.
    fn get(&self, key: &str) -> &Value {
        match self.text.get(key) {
            Some(v) => v,
            None => self.defaults.get(key).unwrap_or(&Value::Null),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn bad(&self, reason: String) -> EngineError {
        EngineError::BadConfig {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// The error for a key whose value headwise does not compute.
    fn refuse(&self, key: &str, value: &Value, supported: &str) -> EngineError {
        self.bad(format!(
            "{} = {value} is not supported; supported: {supported}",
            self.name(key)
        ))
    }

    /// Bounded as read (see [`super::config::size_limit`]), so no vector is sized from 2^40.
    fn usize(&self, key: &str) -> Result<usize> {
        let value = self
            .get(key)
            .as_u64()
            .ok_or_else(|| self.bad(format!("missing or non-integer {}", self.name(key))))?;
        super::config::bounded_size(&self.name(key), value).map_err(|e| self.bad(e))
    }

    fn positive(&self, key: &str) -> Result<usize> {
        match self.usize(key)? {
            0 => Err(self.refuse(key, self.get(key), "a positive integer")),
            v => Ok(v),
        }
    }

    fn float(&self, key: &str) -> Result<f64> {
        self.get(key)
            .as_f64()
            .ok_or_else(|| self.bad(format!("missing or non-numeric {}", self.name(key))))
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            Value::Null => Ok(default),
            Value::Bool(b) => Ok(*b),
            other => Err(self.refuse(key, other, "true or false")),
        }
    }

    /// A soft-cap: null (none) or a positive number.
    fn softcap(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            Value::Null => Ok(None),
            v => match v.as_f64() {
                Some(c) if c > 0.0 && c.is_finite() => Ok(Some(c as f32)),
                _ => Err(self.refuse(key, v, "null or a positive number")),
            },
        }
    }

    /// A key transformers ignores for this model type: refused unless absent, null or `allowed`,
    /// so that a config asking for something is never silently computed without it.
    fn ignored(&self, key: &str, allowed: Option<f64>, why: &str) -> Result<()> {
        match self.text.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(v) if allowed.is_some() && v.as_f64() == allowed => Ok(()),
            Some(v) => Err(self.bad(format!("{} = {v} is not supported: {why}", self.name(key)))),
        }
    }
}

/// One RoPE parameter object (`rope_parameters` or one of its per-layer-type entries, or a
/// legacy `rope_scaling`): its type must be `default` or `linear`.
fn rope_from(keys: &Keys, key: &str, params: &Value, theta: f64) -> Result<Rope> {
    let (new, old) = (params.get("rope_type"), params.get("type"));
    if let (Some(new), Some(old)) = (new, old)
        && new != old
    {
        // transformers keeps `rope_type` and drops `type`: a file that says both is ambiguous.
        return Err(keys.bad(format!(
            "{} = {new} and {} = {old} disagree",
            keys.name(&format!("{key}.rope_type")),
            keys.name(&format!("{key}.type"))
        )));
    }
    let kind = new.or(old).and_then(Value::as_str).unwrap_or("default");
    let theta = params
        .get("rope_theta")
        .and_then(Value::as_f64)
        .unwrap_or(theta);
    if !(theta > 0.0 && theta.is_finite()) {
        return Err(keys.refuse(
            &format!("{key}.rope_theta"),
            &json!(theta),
            "a positive number",
        ));
    }
    if let Some(p) = params.get("partial_rotary_factor").filter(|v| !v.is_null())
        && p.as_f64() != Some(1.0)
    {
        return Err(keys.refuse(&format!("{key}.partial_rotary_factor"), p, "1.0"));
    }
    let factor = match kind {
        "default" => 1.0,
        "linear" => match params.get("factor").and_then(Value::as_f64) {
            Some(f) if f > 0.0 && f.is_finite() => f,
            _ => {
                return Err(keys.refuse(
                    &format!("{key}.factor"),
                    params.get("factor").unwrap_or(&Value::Null),
                    "a positive number for linear RoPE scaling",
                ));
            }
        },
        other => {
            return Err(keys.refuse(
                &format!("{key}.rope_type"),
                &json!(other),
                "\"default\" and \"linear\"",
            ));
        }
    };
    Ok(Rope { theta, factor })
}

/// Gemma 1 and 2: one RoPE for every layer, from `rope_parameters` (transformers 5), or
/// `rope_theta` and `rope_scaling` (older files; `rope_scaling` wins, as in transformers).
fn single_rope(keys: &Keys) -> Result<Rope> {
    let theta = keys.get("rope_theta").as_f64().unwrap_or(10000.0);
    for key in ["rope_scaling", "rope_parameters"] {
        match keys.get(key) {
            Value::Null => continue,
            params @ Value::Object(_) => return rope_from(keys, key, params, theta),
            other => return Err(keys.refuse(key, other, "an object")),
        }
    }
    Ok(Rope { theta, factor: 1.0 })
}

/// Gemma 3: sliding layers rotate with the local base, full layers with the global one (which
/// the larger releases scale linearly). transformers 5 writes both under `rope_parameters`,
/// keyed by layer type; older files have `rope_theta`, `rope_local_base_freq` and a
/// `rope_scaling` that applies to full layers only.
fn gemma3_ropes(keys: &Keys) -> Result<(Rope, Rope)> {
    let global_theta = keys.get("rope_theta").as_f64().unwrap_or(1_000_000.0);
    let local_theta = keys
        .get("rope_local_base_freq")
        .as_f64()
        .unwrap_or(10_000.0);
    let default = json!({"rope_type": "default"});
    let (mut full, sliding) = match keys.get("rope_parameters") {
        Value::Null => (default.clone(), default.clone()),
        Value::Object(map)
            if map.contains_key("full_attention") || map.contains_key("sliding_attention") =>
        {
            let entry = |name: &str| match map.get(name) {
                None | Some(Value::Null) => Ok(default.clone()),
                Some(v @ Value::Object(_)) => Ok(v.clone()),
                Some(other) => {
                    Err(keys.refuse(&format!("rope_parameters.{name}"), other, "an object"))
                }
            };
            (entry("full_attention")?, entry("sliding_attention")?)
        }
        other => {
            return Err(keys.refuse(
                "rope_parameters",
                other,
                "an object keyed by layer type (\"full_attention\", \"sliding_attention\")",
            ));
        }
    };
    // Older files scale the global RoPE with `rope_scaling`: named so in errors.
    let mut full_key = "rope_parameters.full_attention";
    match keys.get("rope_scaling") {
        Value::Null => {}
        Value::Object(scaling) => {
            if let Value::Object(f) = &mut full {
                f.extend(scaling.clone());
            }
            full_key = "rope_scaling";
        }
        other => return Err(keys.refuse("rope_scaling", other, "an object")),
    }
    let global = rope_from(keys, full_key, &full, global_theta)?;
    let local = rope_from(
        keys,
        "rope_parameters.sliding_attention",
        &sliding,
        local_theta,
    )?;
    Ok((global, local))
}

/// Which layers slide: `layer_types` when given, else transformers' default pattern (Gemma 2:
/// every other layer from the first; Gemma 3: all but every `sliding_window_pattern`-th).
fn sliding_layers(keys: &Keys, generation: Generation, layers: usize) -> Result<Vec<bool>> {
    if let Some(types) = keys.text.get("layer_types").filter(|v| !v.is_null()) {
        let list = types
            .as_array()
            .filter(|a| a.len() == layers)
            .ok_or_else(|| {
                keys.bad(format!(
                    "{} must list one type per layer ({layers})",
                    keys.name("layer_types")
                ))
            })?;
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(keys.refuse(
                    "layer_types",
                    t,
                    "\"sliding_attention\" and \"full_attention\"",
                )),
            })
            .collect();
    }
    let pattern = match generation {
        Generation::One => return Ok(vec![false; layers]),
        Generation::Two => 2,
        Generation::Three => keys.positive("sliding_window_pattern")?,
    };
    Ok((0..layers).map(|i| (i + 1) % pattern != 0).collect())
}

/// The activation of the GLU. transformers reads `hidden_activation` for Gemma 2 and 3 and
/// `hidden_act` for Gemma 1, where the legacy "gelu" means the tanh approximation.
fn activation(keys: &Keys, generation: Generation) -> Result<Activation> {
    let key = if generation == Generation::One {
        "hidden_act"
    } else {
        "hidden_activation"
    };
    let value = keys.get(key);
    Ok(match value.as_str() {
        Some("gelu_pytorch_tanh" | "gelu_new") => Activation::GeluTanh,
        Some("gelu") if generation == Generation::One => Activation::GeluTanh,
        Some("gelu") => Activation::Gelu,
        Some("silu" | "swish") => Activation::Silu,
        Some("relu") => Activation::Relu,
        _ => {
            return Err(keys.refuse(
                key,
                value,
                "\"gelu_pytorch_tanh\", \"gelu_new\", \"gelu\", \"silu\", \"relu\"",
            ));
        }
    })
}

/// The [`ModelConfig`] of a Gemma config.json (model_type one of [`MODEL_TYPES`]).
pub fn parse_config(json: &Value, path: &Path) -> Result<ModelConfig> {
    let bad = |reason: String| EngineError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let model_type = json
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no model_type".into()))?;
    let multimodal = model_type == "gemma3";
    let (text, prefix) = if multimodal {
        let text = json
            .get("text_config")
            .filter(|t| t.is_object())
            .ok_or_else(|| bad("a gemma3 config needs its text_config".into()))?;
        match text.get("model_type").and_then(Value::as_str) {
            None | Some("gemma3_text") => {}
            Some(other) => {
                return Err(bad(format!(
                    "text_config.model_type = \"{other}\" is not supported; supported: \"gemma3_text\""
                )));
            }
        }
        (text, "text_config.")
    } else {
        (json, "")
    };
    let generation = match model_type {
        "gemma" => Generation::One,
        "gemma2" => Generation::Two,
        "gemma3_text" | "gemma3" => Generation::Three,
        other => return Err(bad(format!("model_type '{other}' is not a Gemma"))),
    };
    let keys = Keys {
        text,
        defaults: class_defaults(generation),
        prefix,
        path,
    };

    let layers = keys.positive("num_hidden_layers")?;
    let heads = keys.positive("num_attention_heads")?;
    let kv_heads = keys.positive("num_key_value_heads")?;
    if heads % kv_heads != 0 {
        return Err(bad(format!(
            "{heads} heads cannot be grouped over {kv_heads} kv heads"
        )));
    }
    let hidden = keys.positive("hidden_size")?;
    let head_dim = keys.positive("head_dim")?;
    let vocab = keys.positive("vocab_size")?;
    let intermediate = keys.positive("intermediate_size")?;
    let max_positions = keys.positive("max_position_embeddings")?;
    let norm_eps = keys.float("rms_norm_eps")?;
    let activation = activation(&keys, generation)?;
    let attention_bias = keys.bool("attention_bias", false)?;

    if keys.bool("use_bidirectional_attention", false)? {
        return Err(keys.refuse(
            "use_bidirectional_attention",
            &Value::Bool(true),
            "false or null (causal attention)",
        ));
    }

    let (scale, attn_softcap, window, final_softcap) = match generation {
        Generation::One => {
            let why = "Gemma 1 has no such feature and transformers ignores it";
            for key in [
                "attn_logit_softcapping",
                "final_logit_softcapping",
                "sliding_window",
                "layer_types",
            ] {
                keys.ignored(key, None, why)?;
            }
            keys.ignored("query_pre_attn_scalar", Some(head_dim as f64), why)?;
            (1.0 / (head_dim as f64).sqrt(), None, None, None)
        }
        Generation::Two | Generation::Three => {
            let scalar = keys.float("query_pre_attn_scalar")?;
            if !(scalar > 0.0 && scalar.is_finite()) {
                return Err(keys.refuse(
                    "query_pre_attn_scalar",
                    keys.get("query_pre_attn_scalar"),
                    "a positive number",
                ));
            }
            let attn_softcap = if generation == Generation::Three {
                // Gemma 3 replaced attention soft-capping by the q/k norms: transformers keeps
                // the key but never applies it, so a value here is a config that disagrees
                // with the implementation.
                keys.ignored(
                    "attn_logit_softcapping",
                    None,
                    "transformers' Gemma 3 does not apply attention soft-capping",
                )?;
                None
            } else {
                keys.softcap("attn_logit_softcapping")?
            };
            let final_softcap = if multimodal {
                keys.ignored(
                    "final_logit_softcapping",
                    None,
                    "Gemma3ForConditionalGeneration does not apply final-logit soft-capping",
                )?;
                None
            } else {
                keys.softcap("final_logit_softcapping")?
            };
            if generation == Generation::Two {
                keys.ignored(
                    "sliding_window_pattern",
                    Some(2.0),
                    "Gemma 2 alternates sliding and full layers (give layer_types instead)",
                )?;
            }
            let window = match keys.get("sliding_window") {
                Value::Null => None,
                v => match v.as_u64() {
                    Some(w) if w > 0 => Some(w as usize),
                    _ => return Err(keys.refuse("sliding_window", v, "a positive integer")),
                },
            };
            (scalar.powf(-0.5), attn_softcap, window, final_softcap)
        }
    };

    let sliding = sliding_layers(&keys, generation, layers)?;
    if sliding.contains(&true) && window.is_none() {
        return Err(keys.refuse(
            "sliding_window",
            &Value::Null,
            "a positive integer when layer_types has sliding_attention layers",
        ));
    }
    let (global_rope, local_rope) = match generation {
        Generation::Three => gemma3_ropes(&keys)?,
        _ => {
            let rope = single_rope(&keys)?;
            (rope, rope)
        }
    };
    let tie_word_embeddings = if multimodal {
        // Gemma3ForConditionalGeneration ties by its own (outer) config.
        match json.get("tie_word_embeddings") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(keys.refuse("tie_word_embeddings", other, "true or false")),
        }
    } else {
        keys.bool("tie_word_embeddings", true)?
    };

    let layer_attention = sliding
        .iter()
        .map(|&slides| LayerAttention {
            scale: scale as f32,
            softcap: attn_softcap,
            window: if slides { window } else { None },
            rope: true,
        })
        .collect();
    let gemma = GemmaConfig {
        generation,
        multimodal,
        sliding,
        global_rope,
        local_rope,
        final_softcap,
        embed_scale: (hidden as f64).sqrt() as f32,
    };
    Ok(ModelConfig {
        model_type: model_type.to_string(),
        architecture: Architecture::Gemma,
        layers,
        heads,
        kv_heads,
        hidden,
        head_dim,
        intermediate,
        vocab,
        max_positions,
        norm_eps,
        activation,
        rope_theta: global_rope.theta,
        type_vocab_size: 0,
        tie_word_embeddings,
        attention_bias,
        vision: None,
        layer_attention,
        gemma: Some(gemma),
        llama: None,
        encoder: None,
        modernbert: None,
    })
}

/// Gemma's RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · (1 + w)`, the `1 + w`
/// formed once at load time in f32 as transformers forms it every call.
struct GemmaNorm {
    scale: Tensor<1>,
    eps: f64,
}

impl GemmaNorm {
    fn load(
        w: &dyn WeightSource,
        name: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        let weight = checked(w, &format!("{name}.weight"), &[dim])?;
        let plus_one: Vec<f32> = weight.data.iter().map(|v| 1.0 + v).collect();
        Ok(Self {
            scale: upload(&HostTensor::new(vec![dim], plus_one), device),
            eps,
        })
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean_square = x.clone().square().mean_dim(D - 1);
        let normed = x * (mean_square + self.eps).sqrt().recip();
        normed * self.scale.clone().unsqueeze::<D>()
    }
}

/// A weight, checked against the shape the config implies, so that a file that disagrees with
/// its config is an error naming the tensor rather than a failure inside a matrix product.
fn checked(w: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<HostTensor> {
    let t = w.tensor(name)?;
    if t.shape != shape {
        return Err(EngineError::BadTensor {
            path: w.path().to_path_buf(),
            name: name.to_string(),
            reason: format!("shape {:?}, but the config implies {shape:?}", t.shape),
        });
    }
    Ok(t)
}

/// A `nn.Linear(in, out)` under `name`, checked.
fn linear(
    w: &dyn WeightSource,
    name: &str,
    [input, output]: [usize; 2],
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    let weight = checked(w, &format!("{name}.weight"), &[output, input])?.transposed();
    let bias = if bias {
        Some(checked(w, &format!("{name}.bias"), &[output])?)
    } else {
        None
    };
    Ok(Linear::from_host(&weight, bias.as_ref(), device))
}

struct GemmaLayer {
    input_norm: GemmaNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Gemma 3.
    q_norm: Option<GemmaNorm>,
    k_norm: Option<GemmaNorm>,
    /// Gemma 2 and 3: normalises the attention output before the residual sum.
    post_attention_norm: Option<GemmaNorm>,
    /// Before the feed-forward (Gemma 1 calls it `post_attention_layernorm`).
    pre_ff_norm: GemmaNorm,
    /// Gemma 2 and 3.
    post_ff_norm: Option<GemmaNorm>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Gemma {
    config: ModelConfig,
    gemma: GemmaConfig,
    embed_tokens: Tensor<2>,
    layers: Vec<GemmaLayer>,
    norm: GemmaNorm,
    /// [hidden, vocab]
    lm_head: Tensor<2>,
}

/// Where the text model's weights are: `model.` for the text-only classes; in a `gemma3`
/// folder `model.language_model.` (transformers 5) or `language_model.model.` (the published
/// checkpoints), with the LM head at `lm_head.weight` or `language_model.lm_head.weight`.
fn weight_prefixes(w: &dyn WeightSource, multimodal: bool) -> Result<(&'static str, Vec<String>)> {
    let candidates: &[(&str, &str)] = if multimodal {
        &[
            ("model.language_model.", "lm_head.weight"),
            ("language_model.model.", "language_model.lm_head.weight"),
        ]
    } else {
        &[("model.", "lm_head.weight")]
    };
    for (prefix, head) in candidates {
        if w.contains(&format!("{prefix}embed_tokens.weight")) {
            return Ok((prefix, vec![head.to_string(), "lm_head.weight".to_string()]));
        }
    }
    Err(EngineError::Missing {
        path: w.path().to_path_buf(),
        what: format!(
            "weight {}",
            candidates
                .iter()
                .map(|(p, _)| format!("{p}embed_tokens.weight"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    })
}

impl Gemma {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let gemma = config.gemma.clone().ok_or_else(|| EngineError::BadConfig {
            path: w.path().to_path_buf(),
            reason: "not a Gemma config".into(),
        })?;
        let (prefix, heads) = weight_prefixes(w, gemma.multimodal)?;
        let eps = config.norm_eps;
        let (hidden, d) = (config.hidden, config.head_dim);
        let (q_width, kv_width) = (config.heads * d, config.kv_heads * d);
        let later = gemma.generation != Generation::One;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{prefix}layers.{i}");
            let norm = |name: &str, dim: usize| {
                GemmaNorm::load(w, &format!("{l}.{name}"), dim, eps, device)
            };
            let lin = |name: &str, shape: [usize; 2], bias: bool| {
                linear(w, &format!("{l}.{name}"), shape, bias, device)
            };
            let bias = config.attention_bias;
            let (post_attention_norm, pre_ff_norm, post_ff_norm) = if later {
                (
                    Some(norm("post_attention_layernorm", hidden)?),
                    norm("pre_feedforward_layernorm", hidden)?,
                    Some(norm("post_feedforward_layernorm", hidden)?),
                )
            } else {
                (None, norm("post_attention_layernorm", hidden)?, None)
            };
            let three = gemma.generation == Generation::Three;
            layers.push(GemmaLayer {
                input_norm: norm("input_layernorm", hidden)?,
                q_proj: lin("self_attn.q_proj", [hidden, q_width], bias)?,
                k_proj: lin("self_attn.k_proj", [hidden, kv_width], bias)?,
                v_proj: lin("self_attn.v_proj", [hidden, kv_width], bias)?,
                o_proj: lin("self_attn.o_proj", [q_width, hidden], bias)?,
                q_norm: three.then(|| norm("self_attn.q_norm", d)).transpose()?,
                k_norm: three.then(|| norm("self_attn.k_norm", d)).transpose()?,
                post_attention_norm,
                pre_ff_norm,
                post_ff_norm,
                gate: lin("mlp.gate_proj", [hidden, config.intermediate], false)?,
                up: lin("mlp.up_proj", [hidden, config.intermediate], false)?,
                down: lin("mlp.down_proj", [config.intermediate, hidden], false)?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let embed_name = format!("{prefix}embed_tokens.weight");
        let embed_host = checked(w, &embed_name, &[config.vocab, hidden])?;
        let head_host = if config.tie_word_embeddings {
            embed_host.clone()
        } else {
            let name = heads.iter().find(|h| w.contains(h)).unwrap_or(&heads[0]);
            checked(w, name, &[config.vocab, hidden])?
        };
        Ok(Self {
            config: config.clone(),
            embed_tokens: upload(&embed_host, device),
            layers,
            norm: GemmaNorm::load(w, &format!("{prefix}norm"), hidden, eps, device)?,
            lm_head: upload(&head_host.transposed(), device),
            gemma,
        })
    }

    /// cos and sin tables [1, T, d] for rotate-half RoPE: Gemma's linear scaling is the shared
    /// RoPE's `linear` (a factor of 1 divides by one, exactly).
    fn rope_tables(
        &self,
        rope: Rope,
        packing: &Packing,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>) {
        rope::Rope {
            theta: rope.theta,
            rotary_dim: self.config.head_dim,
            scaling: rope::RopeScaling::Linear {
                factor: rope.factor,
            },
        }
        .tables(packing, device)
    }

    /// The inputs packed into `input` (see [`Packing`]): one trace each.
    pub fn forward_packed(
        &self,
        input: &TokenInput,
        packing: &Packing,
        device: &Device,
    ) -> Result<Vec<Trace>> {
        let cfg = &self.config;
        let global = self.rope_tables(self.gemma.global_rope, packing, device);
        let local = (self.gemma.local_rope != self.gemma.global_rope)
            .then(|| self.rope_tables(self.gemma.local_rope, packing, device));
        let rotate = |x: Tensor<3>, (cos, sin): &(Tensor<3>, Tensor<3>)| rope::rotate(x, cos, sin);
        let mut x =
            embed(&self.embed_tokens, &input.ids, device) * f64::from(self.gemma.embed_scale);
        let mut traces = Vec::with_capacity(self.layers.len());
        for (i, (layer, attention)) in self.layers.iter().zip(&cfg.layer_attention).enumerate() {
            if !packing.enters_layer(i, &mut x)? {
                continue;
            }
            let mask = packing.mask(true, None, attention.window);
            let tables = match &local {
                Some(local) if self.gemma.rope_of_layer(i) == self.gemma.local_rope => local,
                _ => &global,
            };
            let h = layer.input_norm.forward(x.clone());
            let mut q = split_heads(layer.q_proj.forward(h.clone()), cfg.heads);
            let mut k = split_heads(layer.k_proj.forward(h.clone()), cfg.kv_heads);
            let v = split_heads(layer.v_proj.forward(h), cfg.kv_heads);
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = qn.forward(q);
                k = kn.forward(k);
            }
            let q = rotate(q, tables);
            let k = rotate(k, tables);
            let (context, mut trace) = attend(
                q,
                k,
                v,
                &mask,
                attention,
                packing.keep_attention,
                packing.layer_edits(i, cfg.heads).as_ref(),
                packing.tape.as_ref(),
            );
            let mut out = layer.o_proj.forward(context);
            if let Some(norm) = &layer.post_attention_norm {
                out = norm.forward(out);
            }
            x = x + out;
            let h = layer.pre_ff_norm.forward(x.clone());
            let gated =
                activate(cfg.activation, layer.gate.forward(h.clone())) * layer.up.forward(h);
            let mut out = layer.down.forward(gated);
            if let Some(norm) = &layer.post_ff_norm {
                out = norm.forward(out);
            }
            x = x + out;
            trace.residual = residual_figures(&x, &packing.lengths)?;
            traces.push(trace);
        }
        if packing.stops_early(self.layers.len(), &x) {
            return packing.split(traces, None);
        }
        let last = self.norm.forward(packing.last_rows(x, device));
        let mut logits = last.matmul(self.lm_head.clone());
        if let Some(c) = self.gemma.final_softcap {
            let c = f64::from(c);
            logits = (logits / c).tanh() * c;
        }
        packing.split(traces, Some(logits))
    }
}
