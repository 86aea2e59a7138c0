//! CLIP's and SigLIP's vision towers: pre-norm encoders over image patches, alone
//! (`clip_vision_model`, `siglip_vision_model`) or as the vision half of a two-tower folder
//! (`clip`, `siglip`, weights under `vision_model.`). CLIP puts a class embedding before the
//! patches and a LayerNorm (`pre_layrnorm`) before the first layer, and its patch convolution has
//! no bias; SigLIP has no class token (every token is a patch) and a biased patch convolution.
//! SigLIP's attention-pooling head (one learned probe attending over the final patches) is not
//! an encoder layer and is not computed; the text towers are not loaded.

use super::config::{ModelConfig, VisionConfig};
use super::key_mask::KeyMask;
use super::layers::{LayerNorm, Linear, attend, split_heads, upload};
use super::residual::residual_figures;
use super::weights::WeightSource;
use super::{PixelInput, bert::activate};
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::imaging::resample::{GridInterpolation, resize_grid};
use crate::trace::Trace;
use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};

/// Which tower a model type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Clip,
    Siglip,
}

impl Tower {
    pub fn of(model_type: &str) -> Option<Self> {
        match model_type {
            "clip" | "clip_vision_model" => Some(Self::Clip),
            "siglip" | "siglip_vision_model" => Some(Self::Siglip),
            _ => None,
        }
    }

    /// CLIPVisionConfig's and SiglipVisionConfig's defaults, for keys a config.json leaves out
    /// (nested configs are often written as a difference from them).
    fn defaults(self) -> Value {
        let (patch, act, eps) = match self {
            Self::Clip => (32, "quick_gelu", 1e-5),
            Self::Siglip => (16, "gelu_pytorch_tanh", 1e-6),
        };
        json!({
            "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": patch,
            "hidden_act": act, "layer_norm_eps": eps,
        })
    }
}

/// The vision tower's config with the tower's defaults filled in: the object itself for a bare
/// tower, its `vision_config` for a two-tower folder; None for other model types.
pub fn tower_json(json: &Value, model_type: &str) -> std::result::Result<Option<Value>, String> {
    let Some(tower) = Tower::of(model_type) else {
        return Ok(None);
    };
    let vision = if model_type.ends_with("_vision_model") {
        json
    } else {
        json.get("vision_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| {
                format!(
                    "a '{model_type}' config without vision_config: headwise runs the vision \
                     tower of a {model_type} folder and needs its config"
                )
            })?
    };
    let mut out = tower.defaults();
    if let (Value::Object(out), Value::Object(given)) = (&mut out, vision) {
        for (key, value) in given {
            if !value.is_null() {
                out.insert(key.clone(), value.clone());
            }
        }
        out.insert("model_type".into(), model_type.into());
    }
    Ok(Some(out))
}

struct TowerLayer {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct VisionTower {
    config: ModelConfig,
    vision: VisionConfig,
    /// The patch convolution as a matrix: [channels·ph·pw, hidden].
    patch: Linear,
    /// CLIP's class embedding, [1, hidden].
    class: Option<Tensor<2>>,
    /// [positions, hidden] on the host, for interpolating to other patch grids.
    positions: HostTensor,
    /// CLIP's `pre_layrnorm` on the embeddings.
    pre_norm: Option<LayerNorm>,
    layers: Vec<TowerLayer>,
}

/// Two-tower checkpoints (and transformers 4's bare towers) put the tower under `vision_model.`.
fn prefix(w: &dyn WeightSource) -> &'static str {
    ["vision_model.", ""]
        .into_iter()
        .find(|p| w.contains(&format!("{p}embeddings.patch_embedding.weight")))
        .unwrap_or("")
}

impl VisionTower {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let bad_config = |reason: String| EngineError::BadConfig {
            path: w.path().to_path_buf(),
            reason,
        };
        let tower = Tower::of(&config.model_type)
            .ok_or_else(|| bad_config(format!("'{}' is not a vision tower", config.model_type)))?;
        let vision = config
            .vision
            .clone()
            .ok_or_else(|| bad_config("a vision tower needs image_size and patch_size".into()))?;
        let p = prefix(w);
        let eps = config.norm_eps;
        let hidden = config.hidden;
        let bad_tensor = |name: &str, reason: String| EngineError::BadTensor {
            path: w.path().to_path_buf(),
            name: name.to_string(),
            reason,
        };
        let conv_name = format!("{p}embeddings.patch_embedding.weight");
        let conv = w.tensor(&conv_name)?;
        let [ph, pw] = vision.patch_size;
        let expected = [hidden, vision.channels, ph, pw];
        if conv.shape != expected {
            return Err(bad_tensor(
                &conv_name,
                format!("shape {:?}, expected {expected:?}", conv.shape),
            ));
        }
        let conv = HostTensor::new(
            vec![hidden, vision.channels * ph * pw],
            conv.data.into_vec(),
        );
        let conv_bias = match tower {
            Tower::Siglip => Some(w.tensor(&format!("{p}embeddings.patch_embedding.bias"))?),
            Tower::Clip => None,
        };
        let patch = Linear::from_host(&conv.transposed(), conv_bias.as_ref(), device);
        let class = match tower {
            Tower::Clip => {
                let t = w.tensor(&format!("{p}embeddings.class_embedding"))?;
                Some(upload(
                    &HostTensor::new(vec![1, hidden], t.data.into_vec()),
                    device,
                ))
            }
            Tower::Siglip => None,
        };
        let position_name = format!("{p}embeddings.position_embedding.weight");
        let positions = w.tensor(&position_name)?;
        let [rows, cols] = vision.trained_grid();
        let trained = rows * cols + vision.prefix_tokens();
        if positions.shape != [trained, hidden] {
            return Err(bad_tensor(
                &position_name,
                format!(
                    "shape {:?}, but image_size {:?} / patch_size {:?} give {trained} positions",
                    positions.shape, vision.image_size, vision.patch_size
                ),
            ));
        }
        let pre_norm = match tower {
            Tower::Clip => Some(LayerNorm::load(
                w,
                &format!("{p}pre_layrnorm"),
                eps,
                device,
            )?),
            Tower::Siglip => None,
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}encoder.layers.{i}");
            let lin = |name: &str| Linear::load(w, &format!("{l}.{name}"), true, device);
            let norm = |name: &str| LayerNorm::load(w, &format!("{l}.{name}"), eps, device);
            layers.push(TowerLayer {
                norm1: norm("layer_norm1")?,
                query: lin("self_attn.q_proj")?,
                key: lin("self_attn.k_proj")?,
                value: lin("self_attn.v_proj")?,
                out: lin("self_attn.out_proj")?,
                norm2: norm("layer_norm2")?,
                fc1: lin("mlp.fc1")?,
                fc2: lin("mlp.fc2")?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        Ok(Self {
            config: config.clone(),
            vision,
            patch,
            class,
            positions,
            pre_norm,
            layers,
        })
    }

    pub fn forward(&self, input: &PixelInput, device: &Device) -> Result<Trace> {
        let [ph, pw] = self.vision.patch_size;
        let grid = [input.height / ph, input.width / pw];
        if grid.contains(&0) {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "a {}×{} image is smaller than one {pw}×{ph} patch",
                    input.width, input.height
                ),
            });
        }
        if input.channels != self.vision.channels {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} channels, but the model takes {}",
                    input.channels, self.vision.channels
                ),
            });
        }
        let patches = upload(&super::vit::patchify(input, self.vision.patch_size), device);
        let patches: Tensor<2> = self.patch.forward(patches);
        let x = match &self.class {
            Some(class) => Tensor::cat(vec![class.clone(), patches], 0),
            None => patches,
        };
        let x = x + upload::<2>(&self.positions_for(grid), device);
        let mut x = match &self.pre_norm {
            Some(norm) => norm.forward(x),
            None => x,
        };
        let heads = self.config.heads;
        let mut traces = Vec::with_capacity(self.layers.len());
        // Every patch sees every patch, and a picture's attention is always kept: rollout and
        // flow need it whole, and at ~1,400 tokens it is small.
        let open = KeyMask::new(&[x.dims()[0]], false, None, None);
        for (layer, attention) in self.layers.iter().zip(&self.config.layer_attention) {
            let h = layer.norm1.forward(x.clone());
            let q = split_heads(layer.query.forward(h.clone()), heads);
            let k = split_heads(layer.key.forward(h.clone()), heads);
            let v = split_heads(layer.value.forward(h), heads);
            let (context, mut trace) = attend(q, k, v, &open, attention, true, None, None);
            x = x + layer.out.forward(context);
            let h = layer.norm2.forward(x.clone());
            let h = activate(self.config.activation, layer.fc1.forward(h));
            x = x + layer.fc2.forward(h);
            let t = x.dims()[0];
            trace.residual = residual_figures(&x, &[t])?;
            traces.push(trace);
        }
        Ok(Trace {
            layers: traces,
            next_token_probs: None,
        })
    }

    /// The position embeddings for a patch grid: as trained, or the patch part resized with
    /// bicubic interpolation as transformers does with `interpolate_pos_encoding=True` (the
    /// class position kept as it is).
    fn positions_for(&self, grid: [usize; 2]) -> HostTensor {
        let trained = self.vision.trained_grid();
        if grid == trained {
            return self.positions.clone();
        }
        let hidden = self.config.hidden;
        let front = self.vision.prefix_tokens();
        let mut data = self.positions.data[..front * hidden].to_vec();
        let patch_part = &self.positions.data[front * hidden..];
        data.extend(resize_grid(
            patch_part,
            trained,
            grid,
            hidden,
            GridInterpolation::Bicubic,
        ));
        HostTensor::new(vec![front + grid[0] * grid[1], hidden], data)
    }
}
