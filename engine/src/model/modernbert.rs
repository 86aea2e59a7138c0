//! ModernBERT: a pre-norm encoder with rotary positions, alternating global and local
//! (sliding-window, bidirectional) attention with a RoPE base of each kind, a fused QKV
//! projection, GeGLU feed-forward and LayerNorms without biases by default.
//!
//! The local window: transformers lets query i see key j when |i − j| ≤ local_attention / 2.
//! headwise records windows as "how many keys back a query may see, itself included"
//! (|i − j| < window), so a local layer's window is local_attention / 2 + 1, and for this
//! bidirectional model it applies on both sides of the query.

use super::TokenInput;
use super::config::ModelConfig;
use super::layers::{Linear, attend, embed, split_heads, upload};
use super::packing::Packing;
use super::residual::residual_figures;
use super::rope;
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::trace::Trace;
use burn::tensor::{Device, Tensor};
use serde_json::Value;

/// One layer's attention: its sliding window (None for global layers) and its RoPE base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModernLayer {
    /// Keys with |i − j| < window are visible (see the module documentation).
    pub window: Option<usize>,
    pub rope_theta: f64,
}

/// What a ModernBERT config.json says beyond the common fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertOptions {
    pub layers: Vec<ModernLayer>,
    pub norm_bias: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
}

/// The transformers defaults of ModernBertConfig.
const GLOBAL_THETA: f64 = 160_000.0;
const LOCAL_THETA: f64 = 10_000.0;

/// ModernBERT's config.json under the common names: `hidden_activation` is the activation and
/// `norm_eps` the LayerNorm epsilon.
pub fn modernbert_json(json: &Value) -> Value {
    let mut out = json.clone();
    if let Value::Object(map) = &mut out {
        let act = json
            .get("hidden_activation")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or("gelu".into());
        let eps = json
            .get("norm_eps")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(1e-5.into());
        map.insert("hidden_act".into(), act);
        map.insert("layer_norm_eps".into(), eps);
        // The nested per-layer-type RoPE parameters are read here, not by the common parser.
        map.remove("rope_parameters");
        map.remove("rope_scaling");
    }
    out
}

impl ModernBertOptions {
    /// Reads the per-layer attention pattern and RoPE bases, in transformers 5's form
    /// (`layer_types`, `rope_parameters` per layer type) or the earlier one
    /// (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`); anything that
    /// would change the computation and is not implemented is refused by name.
    pub fn from_json(json: &Value, layers: usize) -> std::result::Result<Self, String> {
        let get = |key: &str| json.get(key).filter(|v| !v.is_null());
        let flag = |key: &str| -> std::result::Result<bool, String> {
            match get(key) {
                None => Ok(false),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("{key} {v} is not true or false")),
            }
        };
        let local_attention = match get("local_attention") {
            None => 128,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("local_attention {v} is not a number of tokens"))?
                as usize,
        };
        let sliding: Vec<bool> = match get("layer_types") {
            Some(types) => {
                let types = types
                    .as_array()
                    .filter(|t| t.len() == layers)
                    .ok_or_else(|| {
                        format!("layer_types {types} is not a list of {layers} layer types")
                    })?;
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(false),
                        Some("sliding_attention") => Ok(true),
                        _ => Err(format!(
                            "layer_types entry {t} is not supported; supported: \
                             \"full_attention\", \"sliding_attention\""
                        )),
                    })
                    .collect::<std::result::Result<_, _>>()?
            }
            None => {
                let every = match get("global_attn_every_n_layers") {
                    None => 3,
                    Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                        format!("global_attn_every_n_layers {v} is not a positive number")
                    })?,
                };
                (0..layers as u64).map(|i| i % every != 0).collect()
            }
        };
        let theta = |key: &str| -> std::result::Result<Option<f64>, String> {
            get(key)
                .map(|v| {
                    v.as_f64()
                        .filter(|t| *t > 0.0)
                        .ok_or_else(|| format!("{key} {v} is not a positive number"))
                })
                .transpose()
        };
        let (global_theta, local_theta) = match get("rope_parameters") {
            Some(params) => {
                let of_kind = |kind: &str, fallback: f64| -> std::result::Result<f64, String> {
                    let Some(p) = params.get(kind).filter(|p| !p.is_null()) else {
                        return Ok(fallback);
                    };
                    let rope_type = p.get("rope_type").and_then(Value::as_str);
                    if !matches!(rope_type, None | Some("default")) {
                        return Err(format!(
                            "rope_parameters.{kind}.rope_type {} is not supported; \
                             supported: \"default\"",
                            p["rope_type"]
                        ));
                    }
                    match p.get("rope_theta").filter(|v| !v.is_null()) {
                        None => Ok(fallback),
                        Some(v) => v.as_f64().filter(|t| *t > 0.0).ok_or_else(|| {
                            format!("rope_parameters.{kind}.rope_theta {v} is not positive")
                        }),
                    }
                };
                let global = of_kind(
                    "full_attention",
                    theta("global_rope_theta")?.unwrap_or(GLOBAL_THETA),
                )?;
                let local = of_kind(
                    "sliding_attention",
                    theta("local_rope_theta")?.unwrap_or(LOCAL_THETA),
                )?;
                (global, local)
            }
            None => {
                if let Some(scaling) = get("rope_scaling") {
                    return Err(format!(
                        "rope_scaling {scaling} is not supported for ModernBERT; supported: none"
                    ));
                }
                let global = theta("global_rope_theta")?.unwrap_or(GLOBAL_THETA);
                // transformers 4 used the global base on local layers when this was null.
                let local = match json.get("local_rope_theta") {
                    Some(Value::Null) => global,
                    _ => theta("local_rope_theta")?.unwrap_or(LOCAL_THETA),
                };
                (global, local)
            }
        };
        Ok(Self {
            layers: sliding
                .into_iter()
                .map(|local| ModernLayer {
                    window: local.then_some(local_attention / 2 + 1),
                    rope_theta: if local { local_theta } else { global_theta },
                })
                .collect(),
            norm_bias: flag("norm_bias")?,
            attention_bias: flag("attention_bias")?,
            mlp_bias: flag("mlp_bias")?,
        })
    }
}

/// PyTorch's LayerNorm, with or without its bias (`norm_bias`).
struct Norm {
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f64,
}

impl Norm {
    fn load(
        w: &dyn WeightSource,
        name: &str,
        bias: bool,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            gamma: upload(&w.tensor(&format!("{name}.weight"))?, device),
            beta: if bias {
                Some(upload(&w.tensor(&format!("{name}.bias"))?, device))
            } else {
                None
            },
            eps,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        let y = (x - mean) / (var + self.eps).sqrt() * self.gamma.clone().unsqueeze::<2>();
        match &self.beta {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

struct ModernBertLayer {
    /// None for the first layer, whose attention reads the embedding norm's output directly.
    attn_norm: Option<Norm>,
    qkv: Linear,
    out: Linear,
    mlp_norm: Norm,
    /// Projects to [input, gate], 2 × intermediate wide.
    wi: Linear,
    wo: Linear,
    attention: ModernLayer,
}

pub struct ModernBert {
    config: ModelConfig,
    embed_tokens: Tensor<2>,
    embed_norm: Norm,
    layers: Vec<ModernBertLayer>,
    /// Only what a gradient target reads (`last_hidden_state`); attention never sees it.
    final_norm: Option<Norm>,
}

/// `ModernBertForMaskedLM` and friends put the encoder under `model.`.
fn prefix(w: &dyn WeightSource) -> &'static str {
    ["model.", ""]
        .into_iter()
        .find(|p| w.contains(&format!("{p}embeddings.tok_embeddings.weight")))
        .unwrap_or("")
}

impl ModernBert {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let options = config
            .modernbert
            .clone()
            .ok_or_else(|| EngineError::BadConfig {
                path: w.path().to_path_buf(),
                reason: "a ModernBERT model without its options".into(),
            })?;
        let p = prefix(w);
        let eps = config.norm_eps;
        let norm =
            |name: &str| Norm::load(w, &format!("{p}{name}"), options.norm_bias, eps, device);
        let mut layers = Vec::with_capacity(config.layers);
        for (i, attention) in options.layers.iter().enumerate() {
            let l = format!("layers.{i}");
            let lin =
                |name: &str, bias: bool| Linear::load(w, &format!("{p}{l}.{name}"), bias, device);
            layers.push(ModernBertLayer {
                attn_norm: if i == 0 {
                    None
                } else {
                    Some(norm(&format!("{l}.attn_norm"))?)
                },
                qkv: lin("attn.Wqkv", options.attention_bias)?,
                out: lin("attn.Wo", options.attention_bias)?,
                mlp_norm: norm(&format!("{l}.mlp_norm"))?,
                wi: lin("mlp.Wi", options.mlp_bias)?,
                wo: lin("mlp.Wo", options.mlp_bias)?,
                attention: *attention,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        Ok(Self {
            config: config.clone(),
            embed_tokens: upload(
                &w.tensor(&format!("{p}embeddings.tok_embeddings.weight"))?,
                device,
            ),
            embed_norm: norm("embeddings.norm")?,
            layers,
            final_norm: if w.contains(&format!("{p}final_norm.weight")) {
                Some(norm("final_norm")?)
            } else {
                None
            },
        })
    }

    /// cos and sin tables [1, T, d] for rotate-half RoPE with base `theta`.
    fn rope_tables(
        &self,
        packing: &Packing,
        theta: f64,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>) {
        rope::Rope {
            theta,
            rotary_dim: self.config.head_dim,
            scaling: rope::RopeScaling::None,
        }
        .tables(packing, device)
    }

    pub fn forward_packed(
        &self,
        input: &TokenInput,
        packing: &Packing,
        device: &Device,
    ) -> Result<Vec<Trace>> {
        let cfg = &self.config;
        // RoPE tables per distinct base, built once per pass.
        let mut tables: Vec<(f64, (Tensor<3>, Tensor<3>))> = Vec::new();
        for layer in &self.layers {
            let a = layer.attention;
            if !tables.iter().any(|(theta, _)| *theta == a.rope_theta) {
                tables.push((
                    a.rope_theta,
                    self.rope_tables(packing, a.rope_theta, device),
                ));
            }
        }
        let (heads, d) = (cfg.heads, cfg.head_dim);
        let hidden = heads * d;
        let mut x = self
            .embed_norm
            .forward(embed(&self.embed_tokens, &input.ids, device));
        if let Some(tape) = &packing.tape {
            tape.record_embedded(&x);
        }
        let mut traces = Vec::with_capacity(self.layers.len());
        for (index, (layer, attention)) in self.layers.iter().zip(&cfg.layer_attention).enumerate()
        {
            if !packing.enters_layer(index, &mut x)? {
                continue;
            }
            let a = layer.attention;
            let (cos, sin) = &tables
                .iter()
                .find(|(theta, _)| *theta == a.rope_theta)
                .expect("a table for every base")
                .1;
            let rotate = |x: Tensor<3>| rope::rotate(x, cos, sin);
            let mask = packing.mask(false, input.key_valid.as_deref(), a.window);
            let h = match &layer.attn_norm {
                Some(norm) => norm.forward(x.clone()),
                None => x.clone(),
            };
            let qkv = layer.qkv.forward(h);
            let q = rotate(split_heads(qkv.clone().narrow(1, 0, hidden), heads));
            let k = rotate(split_heads(qkv.clone().narrow(1, hidden, hidden), heads));
            let v = split_heads(qkv.narrow(1, 2 * hidden, hidden), heads);
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
            x = x + layer.out.forward(context);
            let h = layer.wi.forward(layer.mlp_norm.forward(x.clone()));
            let inter = h.dims()[1] / 2;
            let gated = super::bert::activate(cfg.activation, h.clone().narrow(1, 0, inter))
                * h.narrow(1, inter, inter);
            x = x + layer.wo.forward(gated);
            trace.residual = residual_figures(&x, &packing.lengths)?;
            traces.push(trace);
        }
        if packing.stops_early(self.layers.len(), &x) {
            return packing.split(traces, None);
        }
        if let Some(tape) = &packing.tape {
            let hidden = match &self.final_norm {
                Some(norm) => norm.forward(x),
                None => x,
            };
            tape.record_hidden(&hidden);
        }
        packing.split(traces, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_earlier_config_form_gives_the_same_layers_as_transformers_5s() {
        let old = json!({
            "global_attn_every_n_layers": 2, "local_attention": 6,
            "global_rope_theta": 5000.0, "local_rope_theta": 300.0,
        });
        let new = json!({
            "layer_types": ["full_attention", "sliding_attention", "full_attention"],
            "local_attention": 6,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 300.0},
            },
        });
        let a = ModernBertOptions::from_json(&old, 3).unwrap();
        assert_eq!(a, ModernBertOptions::from_json(&new, 3).unwrap());
        let windows: Vec<_> = a.layers.iter().map(|l| l.window).collect();
        assert_eq!(windows, vec![None, Some(4), None]);
        assert_eq!(a.layers[1].rope_theta, 300.0);
    }

    #[test]
    fn defaults_are_transformers_every_third_layer_global_128_wide_windows() {
        let a = ModernBertOptions::from_json(&json!({}), 4).unwrap();
        let windows: Vec<_> = a.layers.iter().map(|l| l.window).collect();
        assert_eq!(windows, vec![None, Some(65), Some(65), None]);
        assert_eq!(a.layers[0].rope_theta, GLOBAL_THETA);
        assert_eq!(a.layers[1].rope_theta, LOCAL_THETA);
        assert!(!a.norm_bias && !a.attention_bias && !a.mlp_bias);
    }
}
