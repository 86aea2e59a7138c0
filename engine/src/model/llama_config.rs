//! What each Llama-family `model_type` (llama, mistral, qwen2, qwen3, smollm/smollm3, phi3,
//! olmo2)
//! reads from config.json, with transformers' defaults for each, and what it refuses.
//!
//! Every key that changes the forward pass is read here explicitly. A key or value the engine
//! does not compute is an error naming the key, its value and the supported values, never a
//! silently different computation. Keys transformers itself ignores for a family are ignored.

use super::rope::{Rope, RopeScaling};
use crate::attention::LayerAttention;
use serde_json::Value;

/// The Llama-family details of a model, beyond the shared hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaOptions {
    pub rope: Rope,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the gate, up and down projections.
    pub mlp_bias: bool,
    /// Qwen3: an RMSNorm over each head's q and k (weights `q_norm`, `k_norm`) before RoPE.
    pub qk_norm: bool,
    /// Phi-3: q, k, v in one `qkv_proj` and gate, up in one `gate_up_proj`.
    pub fused: bool,
    /// OLMo 2: an RMSNorm after attention and after the MLP (on each block's output, before the
    /// residual sum) and none before them; q and k normed over the whole projection (`q_norm`
    /// of heads · head_dim, `k_norm` of kv_heads · head_dim) before the split into heads.
    pub post_norms: bool,
}

/// The Llama-family model types, with the `rope_theta` transformers assumes when a config
/// gives none.
pub const LLAMA_FAMILY: &[(&str, f64)] = &[
    ("llama", 10000.0),
    ("mistral", 10000.0),
    ("qwen2", 10000.0),
    ("qwen3", 10000.0),
    ("smollm", 10000.0),
    ("smollm3", 2_000_000.0),
    ("phi3", 10000.0),
    ("olmo2", 10000.0),
];

fn field<'a>(json: &'a Value, name: &str) -> Option<&'a Value> {
    json.get(name).filter(|v| !v.is_null())
}

fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// A refusal naming the key and value: "key = value: why".
fn refuse(key: &str, value: &Value, why: &str) -> String {
    format!("{key} = {}: {why}", show(value))
}

/// The per-family defaults that transformers' config classes apply, and the per-layer attention.
pub struct LlamaFamilyConfig {
    pub options: LlamaOptions,
    pub layer_attention: Vec<LayerAttention>,
    pub head_dim: usize,
    pub tie_word_embeddings: bool,
    pub norm_eps: f64,
}

/// Reads a Llama-family config. `heads`, `hidden`, `layers`, `max_positions` are already read.
/// Errors are the reason only (the caller adds the file).
pub fn read(
    json: &Value,
    model_type: &str,
    layers: usize,
    heads: usize,
    hidden: usize,
    max_positions: usize,
) -> Result<LlamaFamilyConfig, String> {
    refuse_unsupported_keys(json, model_type)?;
    let flag = |name: &str, default: bool| -> Result<bool, String> {
        match field(json, name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(refuse(name, other, "expected true or false")),
        }
    };
    let uint = |name: &str| -> Result<Option<usize>, String> {
        match field(json, name) {
            None => Ok(None),
            Some(v) => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| refuse(name, v, "expected a whole number"))?;
                super::config::bounded_size(name, n).map(Some)
            }
        }
    };
    // Qwen3's config class defaults head_dim to 128; the others derive it from the width.
    let head_dim = match uint("head_dim")? {
        Some(0) => return Err("head_dim = 0: a head needs at least one dimension".into()),
        Some(d) => d,
        None if model_type == "qwen3" => 128,
        None => hidden / heads,
    };
    let attention_bias = flag("attention_bias", false)?;
    let (qkv_bias, o_bias, mlp_bias) = match model_type {
        // Qwen2's projections have fixed biases; its config has no such keys.
        "qwen2" => (true, false, false),
        "mistral" | "phi3" => (false, false, false),
        // OLMo 2's MLP has no biases whatever mlp_bias says.
        "qwen3" | "olmo2" => (attention_bias, attention_bias, false),
        _ => (attention_bias, attention_bias, flag("mlp_bias", false)?),
    };
    let rope = read_rope(json, model_type, head_dim, max_positions)?;
    let uses_rope = no_rope_layers(json, model_type, layers)?;
    let windows = windows(json, model_type, layers, &uses_rope)?;
    let layer_attention = uses_rope
        .iter()
        .zip(windows)
        .map(|(&rope, window)| LayerAttention {
            window,
            ..LayerAttention::standard(head_dim, rope)
        })
        .collect();
    let norm_eps = match field(json, "rms_norm_eps") {
        None => {
            if matches!(model_type, "phi3" | "olmo2") {
                1e-5
            } else {
                1e-6
            }
        }
        Some(v) => v
            .as_f64()
            .ok_or_else(|| refuse("rms_norm_eps", v, "expected a number"))?,
    };
    Ok(LlamaFamilyConfig {
        options: LlamaOptions {
            rope,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: model_type == "qwen3",
            fused: model_type == "phi3",
            post_norms: model_type == "olmo2",
        },
        layer_attention,
        head_dim,
        tie_word_embeddings: flag("tie_word_embeddings", model_type == "smollm3")?,
        norm_eps,
    })
}

/// Keys of other architectures that would change this forward pass: refused wherever they
/// appear with a value that asks for them.
fn refuse_unsupported_keys(json: &Value, model_type: &str) -> Result<(), String> {
    for key in [
        "num_experts",
        "num_local_experts",
        "n_routed_experts",
        "moe_num_experts",
    ] {
        if let Some(v) = field(json, key).filter(|v| v.as_u64() != Some(0)) {
            return Err(refuse(
                key,
                v,
                "mixture-of-experts feed-forward is not supported (dense models only)",
            ));
        }
    }
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = field(json, key) {
            return Err(refuse(
                key,
                v,
                &format!("soft-capping is not part of {model_type}; supported: null"),
            ));
        }
    }
    for key in ["qk_layernorm", "use_qk_norm"] {
        if let Some(v) = field(json, key).filter(|v| v.as_bool() != Some(false)) {
            return Err(refuse(
                key,
                v,
                &format!("q/k norms are not supported for {model_type}; supported: false"),
            ));
        }
    }
    if model_type != "smollm3" {
        for key in ["no_rope_layers", "no_rope_layer_interval"] {
            if let Some(v) = field(json, key) {
                return Err(refuse(
                    key,
                    v,
                    &format!("NoPE layers are implemented for smollm3 only, not {model_type}"),
                ));
            }
        }
    }
    if !matches!(
        model_type,
        "mistral" | "qwen2" | "qwen3" | "smollm3" | "phi3"
    ) {
        for key in ["sliding_window", "use_sliding_window"] {
            if let Some(v) = field(json, key).filter(|v| v.as_bool() != Some(false)) {
                return Err(refuse(
                    key,
                    v,
                    &format!(
                        "{model_type} has no sliding window; families with one: mistral, qwen2, \
                         qwen3, smollm3, phi3"
                    ),
                ));
            }
        }
    }
    if model_type != "phi3"
        && let Some(v) = field(json, "partial_rotary_factor").filter(|v| v.as_f64() != Some(1.0))
    {
        return Err(refuse(
            "partial_rotary_factor",
            v,
            &format!(
                "partial rotary embeddings are implemented for phi3 only, not {model_type}; supported: 1.0"
            ),
        ));
    }
    Ok(())
}

/// The RoPE settings: `rope_parameters` (transformers 5) or `rope_scaling` (older configs),
/// whose values win over the top-level `rope_theta` and `partial_rotary_factor` as
/// transformers' standardize_rope_params has it.
fn read_rope(
    json: &Value,
    model_type: &str,
    head_dim: usize,
    max_positions: usize,
) -> Result<Rope, String> {
    let (params, params_key) = match (field(json, "rope_parameters"), field(json, "rope_scaling")) {
        (Some(p), _) => (Some(p), "rope_parameters"),
        (None, Some(p)) => (Some(p), "rope_scaling"),
        (None, None) => (None, "rope_parameters"),
    };
    if let Some(p) = params {
        if !p.is_object() {
            return Err(refuse(params_key, p, "expected an object"));
        }
        // Per-layer-type RoPE (Gemma 3's layout) is not a Llama-family feature.
        if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() {
            return Err(refuse(
                params_key,
                p,
                &format!("RoPE per layer type is not supported for {model_type}"),
            ));
        }
    }
    let param = |name: &str| params.and_then(|p| field(p, name));
    let number = |name: &str, v: &Value| -> Result<f64, String> {
        v.as_f64()
            .ok_or_else(|| refuse(&format!("{params_key}.{name}"), v, "expected a number"))
    };
    let default_theta = LLAMA_FAMILY
        .iter()
        .find(|(name, _)| *name == model_type)
        .map_or(10000.0, |(_, theta)| *theta);
    let theta = match param("rope_theta").or_else(|| field(json, "rope_theta")) {
        Some(v) => number("rope_theta", v)?,
        None => default_theta,
    };
    if theta <= 0.0 || !theta.is_finite() {
        return Err(format!("rope_theta = {theta}: must be a positive number"));
    }
    let partial =
        match param("partial_rotary_factor").or_else(|| field(json, "partial_rotary_factor")) {
            Some(v) => number("partial_rotary_factor", v)?,
            None => 1.0,
        };
    let rotary_dim = (head_dim as f64 * partial) as usize;
    if !(partial > 0.0 && partial <= 1.0) || rotary_dim < 2 || !rotary_dim.is_multiple_of(2) {
        return Err(format!(
            "partial_rotary_factor = {partial}: gives {rotary_dim} rotary dimensions of \
             {head_dim}; need an even number between 2 and head_dim"
        ));
    }
    let kind_value = param("rope_type").or_else(|| param("type"));
    let kind = match kind_value {
        None => "default",
        Some(v) => v
            .as_str()
            .ok_or_else(|| refuse(&format!("{params_key}.rope_type"), v, "expected a string"))?,
    };
    let kind = if model_type == "phi3" && matches!(kind, "su" | "yarn") {
        // Phi-3's config class renames its old names to longrope.
        "longrope"
    } else {
        kind
    };
    let required = |name: &str| -> Result<f64, String> {
        match param(name) {
            Some(v) => number(name, v),
            None => Err(format!(
                "{params_key}.rope_type = \"{kind}\" needs {params_key}.{name}, which is missing"
            )),
        }
    };
    // The pretraining length: Phi-3 keeps it at the top level, which wins there.
    let original_max = || -> Result<f64, String> {
        match field(json, "original_max_position_embeddings")
            .or_else(|| param("original_max_position_embeddings"))
        {
            Some(v) => number("original_max_position_embeddings", v),
            // Phi-3's config class has its own default.
            None if model_type == "phi3" => Ok(4096.0),
            None => Ok(max_positions as f64),
        }
    };
    let scaling = match kind {
        "default" | "dynamic" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: required("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: required("factor")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_positions: original_max()?,
        },
        "longrope" => {
            let list = |name: &str| -> Result<Vec<f64>, String> {
                let v = param(name).ok_or_else(|| {
                    format!("{params_key}.rope_type = \"longrope\" needs {params_key}.{name}")
                })?;
                let values: Option<Vec<f64>> = v
                    .as_array()
                    .map(|a| a.iter().map(Value::as_f64).collect())
                    .unwrap_or(None);
                match values {
                    Some(values) if values.len() == rotary_dim / 2 => Ok(values),
                    _ => Err(refuse(
                        &format!("{params_key}.{name}"),
                        v,
                        &format!(
                            "expected {} numbers (rotary dimensions / 2)",
                            rotary_dim / 2
                        ),
                    )),
                }
            };
            let original = original_max()?;
            let factor = match param("factor") {
                Some(v) => number("factor", v)?,
                None => max_positions as f64 / original,
            };
            let attention_factor = match param("attention_factor") {
                Some(v) => number("attention_factor", v)?,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / original.ln()).sqrt(),
            };
            RopeScaling::LongRope {
                short: list("short_factor")?,
                long: list("long_factor")?,
                original_max_positions: original as usize,
                attention_factor,
            }
        }
        other => {
            return Err(format!(
                "{params_key}.rope_type = \"{other}\" is not supported; supported: default, \
                 dynamic, linear, llama3, longrope"
            ));
        }
    };
    if let RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } = &scaling
        && (*factor <= 0.0 || !factor.is_finite())
    {
        return Err(format!(
            "{params_key}.factor = {factor}: must be a positive number"
        ));
    }
    if let RopeScaling::Llama3 {
        low_freq_factor,
        high_freq_factor,
        ..
    } = &scaling
        && high_freq_factor <= low_freq_factor
    {
        return Err(format!(
            "{params_key}.high_freq_factor = {high_freq_factor} must exceed low_freq_factor \
                 = {low_freq_factor}"
        ));
    }
    Ok(Rope {
        theta,
        rotary_dim,
        scaling,
    })
}

/// Which layers rotate q and k. SmolLM3 lists it per layer in `no_rope_layers` (1 = RoPE,
/// 0 = none, as transformers reads it), by default every `no_rope_layer_interval`-th layer
/// (counted from 1) without.
fn no_rope_layers(json: &Value, model_type: &str, layers: usize) -> Result<Vec<bool>, String> {
    if model_type != "smollm3" {
        return Ok(vec![true; layers]);
    }
    if let Some(v) = field(json, "no_rope_layers") {
        let flags: Option<Vec<bool>> = v.as_array().and_then(|a| {
            a.iter()
                .map(|x| match x.as_u64() {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    _ => x.as_bool(),
                })
                .collect()
        });
        return match flags {
            Some(flags) if flags.len() == layers => Ok(flags),
            _ => Err(refuse(
                "no_rope_layers",
                v,
                &format!("expected {layers} entries of 0 or 1 (one per layer)"),
            )),
        };
    }
    let interval = match field(json, "no_rope_layer_interval") {
        None => 4,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n as usize,
            _ => {
                return Err(refuse(
                    "no_rope_layer_interval",
                    v,
                    "expected a whole number above 0",
                ));
            }
        },
    };
    Ok((0..layers).map(|l| (l + 1) % interval != 0).collect())
}

/// Each layer's sliding window, as transformers masks it in eager attention.
fn windows(
    json: &Value,
    model_type: &str,
    layers: usize,
    uses_rope: &[bool],
) -> Result<Vec<Option<usize>>, String> {
    let window_value = |default: Option<usize>| -> Result<Option<usize>, String> {
        match json.get("sliding_window") {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(refuse(
                    "sliding_window",
                    v,
                    "expected a whole number above 0 or null",
                )),
            },
        }
    };
    let flag = |name: &str| -> Result<bool, String> {
        match field(json, name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(refuse(name, v, "expected true or false")),
        }
    };
    match model_type {
        // Every layer, whenever set; Mistral's config class defaults it to 4096 when absent,
        // and Mistral ignores layer_types.
        "mistral" => Ok(vec![window_value(Some(4096))?; layers]),
        "phi3" => Ok(vec![window_value(None)?; layers]),
        "qwen2" | "qwen3" | "smollm3" => {
            let use_window = flag("use_sliding_window")?;
            let default = if model_type == "smollm3" {
                None
            } else {
                Some(4096)
            };
            let configured = window_value(default)?;
            // Qwen's config classes drop the window unless use_sliding_window; SmolLM3's keep it
            // (its masks follow layer_types alone).
            let window = if model_type == "smollm3" || use_window {
                configured
            } else {
                None
            };
            let types: Vec<bool> = match field(json, "layer_types") {
                Some(v) => {
                    let kinds: Option<Vec<bool>> = v.as_array().and_then(|a| {
                        a.iter()
                            .map(|k| match k.as_str() {
                                Some("full_attention") => Some(false),
                                Some("sliding_attention") => Some(true),
                                _ => None,
                            })
                            .collect()
                    });
                    match kinds {
                        Some(kinds) if kinds.len() == layers => kinds,
                        _ => {
                            return Err(refuse(
                                "layer_types",
                                v,
                                &format!(
                                    "expected {layers} entries, each \"full_attention\" or \
                                     \"sliding_attention\""
                                ),
                            ));
                        }
                    }
                }
                None if model_type == "smollm3" => uses_rope
                    .iter()
                    .map(|&rope| use_window && window.is_some() && !rope)
                    .collect(),
                None => {
                    let from = match field(json, "max_window_layers") {
                        None => 28,
                        Some(v) => v.as_u64().ok_or_else(|| {
                            refuse("max_window_layers", v, "expected a whole number")
                        })? as usize,
                    };
                    (0..layers).map(|l| window.is_some() && l >= from).collect()
                }
            };
            types
                .into_iter()
                .map(|sliding| match (sliding, window) {
                    (false, _) => Ok(None),
                    (true, Some(w)) => Ok(Some(w)),
                    (true, None) => Err(
                        "layer_types has sliding_attention layers but no sliding_window is in \
                         effect (sliding_window is null, or use_sliding_window is false)"
                            .to_string(),
                    ),
                })
                .collect()
        }
        _ => Ok(vec![None; layers]),
    }
}
