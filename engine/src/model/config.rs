//! A model's hyper-parameters, read from Hugging Face's config.json or GGUF metadata.

use super::gguf_file::GgufFile;
use super::llama_config::{self, LlamaOptions};
use crate::attention::LayerAttention;
use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The architectures headwise computes; each has its own forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Bert,
    Gpt2,
    Llama,
    /// ViT, DeiT and DINOv2: pre-norm encoders over image patches.
    Vit,
    /// Gemma 1, 2 and 3 (text): see `gemma.rs`.
    Gemma,
    /// CLIP's and SigLIP's vision towers (alone or the vision half of a two-tower folder).
    VisionTower,
    /// ModernBERT: rotary positions, alternating global and local attention.
    ModernBert,
}

/// The `model_type` values headwise understands, and the forward pass each one uses.
pub const SUPPORTED_MODEL_TYPES: &[(&str, Architecture)] = &[
    ("bert", Architecture::Bert),
    ("roberta", Architecture::Bert),
    ("xlm-roberta", Architecture::Bert),
    ("distilbert", Architecture::Bert),
    ("modernbert", Architecture::ModernBert),
    ("gpt2", Architecture::Gpt2),
    ("llama", Architecture::Llama),
    ("mistral", Architecture::Llama),
    ("qwen2", Architecture::Llama),
    ("qwen3", Architecture::Llama),
    ("smollm", Architecture::Llama),
    ("smollm3", Architecture::Llama),
    ("phi3", Architecture::Llama),
    ("olmo2", Architecture::Llama),
    ("vit", Architecture::Vit),
    ("deit", Architecture::Vit),
    ("dinov2", Architecture::Vit),
    ("dinov2_with_registers", Architecture::Vit),
    ("gemma", Architecture::Gemma),
    ("gemma2", Architecture::Gemma),
    ("gemma3_text", Architecture::Gemma),
    ("gemma3", Architecture::Gemma),
    ("clip_vision_model", Architecture::VisionTower),
    ("siglip_vision_model", Architecture::VisionTower),
    ("clip", Architecture::VisionTower),
    ("siglip", Architecture::VisionTower),
];

pub fn supported_model_types() -> Vec<&'static str> {
    SUPPORTED_MODEL_TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect()
}

/// The activation of an MLP, named as in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// erf-based GELU (`gelu`).
    Gelu,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), GPT-2's default.
    GeluTanh,
    Relu,
    Silu,
    /// CLIP's `quick_gelu`: x · sigmoid(1.702 x).
    QuickGelu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "quick_gelu" => Self::QuickGelu,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model_type: String,
    pub architecture: Architecture,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hidden: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub norm_eps: f64,
    pub activation: Activation,
    pub rope_theta: f64,
    pub type_vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 (and `attention_bias: true` llamas) put biases on q, k and v; ViTs (`qkv_bias`) do
    /// unless told not to.
    pub attention_bias: bool,
    /// Image models only.
    pub vision: Option<VisionConfig>,
    /// How each layer's attention logits follow from its q and k: one entry per layer.
    pub layer_attention: Vec<LayerAttention>,
    /// Gemma models only.
    pub gemma: Option<super::gemma::GemmaConfig>,
    /// The Llama family's RoPE, biases, q/k norms and fused projections; None for other
    /// architectures.
    pub llama: Option<LlamaOptions>,
    /// The BERT family only: what RoBERTa and DistilBERT do differently.
    pub encoder: Option<super::bert::EncoderOptions>,
    /// ModernBERT only: each layer's window and RoPE base.
    pub modernbert: Option<super::modernbert::ModernBertOptions>,
}

/// What an image model adds to the config: its patch geometry and the tokens before the patches.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// A learned CLS token before the patches (all but SigLIP).
    pub class_token: bool,
    /// The [height, width] its position embeddings were trained for.
    pub image_size: [usize; 2],
    /// [height, width] of one patch in pixels.
    pub patch_size: [usize; 2],
    pub channels: usize,
    /// DeiT's distillation token, after CLS.
    pub distillation_token: bool,
    /// DINOv2 with registers: learned tokens between CLS and the patches.
    pub register_tokens: usize,
    /// DINOv2 scales each residual branch by a learned vector.
    pub layer_scale: bool,
    /// ViTForImageClassification and friends: the class names, by index.
    pub labels: Vec<String>,
}

impl VisionConfig {
    /// Tokens before the patches: CLS, then the distillation token or the registers.
    pub fn prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + usize::from(self.distillation_token) + self.register_tokens
    }

    /// The patch grid [rows, cols] the position embeddings were trained for.
    pub fn trained_grid(&self) -> [usize; 2] {
        [
            self.image_size[0] / self.patch_size[0],
            self.image_size[1] / self.patch_size[1],
        ]
    }
}

/// `image_size` and `patch_size` are a number or a [height, width] pair in config.json.
fn pair(value: Option<&Value>) -> Option<[usize; 2]> {
    match value? {
        Value::Number(n) => n.as_u64().map(|v| [v as usize; 2]),
        Value::Array(a) if a.len() == 2 => Some([a[0].as_u64()? as usize, a[1].as_u64()? as usize]),
        _ => None,
    }
}

/// `image_size` or `patch_size` within [`size_limit`] (a size past it is an error, not absent).
fn bounded_pair(json: &Value, key: &str) -> std::result::Result<Option<[usize; 2]>, String> {
    let Some(pair) = pair(field(json, &[key])) else {
        return Ok(None);
    };
    for v in pair {
        bounded_size(key, v as u64)?;
    }
    Ok(Some(pair))
}

fn vision_config(json: &Value, model_type: &str) -> std::result::Result<VisionConfig, String> {
    let default_patch = if model_type.starts_with("dinov2") {
        14
    } else {
        16
    };
    let image_size = bounded_pair(json, "image_size")?.unwrap_or([224, 224]);
    let patch_size = bounded_pair(json, "patch_size")?.unwrap_or([default_patch; 2]);
    if patch_size.contains(&0) || image_size[0] < patch_size[0] || image_size[1] < patch_size[1] {
        return Err(format!(
            "image_size {image_size:?} and patch_size {patch_size:?} give no patches"
        ));
    }
    if field(json, &["use_swiglu_ffn"]).and_then(Value::as_bool) == Some(true) {
        return Err("DINOv2's SwiGLU feed-forward (use_swiglu_ffn) is not supported yet".into());
    }
    let mut labels: Vec<(usize, String)> = field(json, &["id2label"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let tower = super::vision_tower::Tower::of(model_type);
    if tower.is_some() {
        // CLIPForImageClassification's head is not computed: no class names to show.
        labels.clear();
    }
    Ok(VisionConfig {
        class_token: tower != Some(super::vision_tower::Tower::Siglip),
        image_size,
        patch_size,
        channels: bounded_size(
            "num_channels",
            field(json, &["num_channels"])
                .and_then(Value::as_u64)
                .unwrap_or(3),
        )?,
        distillation_token: model_type == "deit",
        register_tokens: if model_type == "dinov2_with_registers" {
            bounded_size(
                "num_register_tokens",
                field(json, &["num_register_tokens"])
                    .and_then(Value::as_u64)
                    .unwrap_or(4),
            )?
        } else {
            0
        },
        layer_scale: model_type.starts_with("dinov2"),
        labels: labels.into_iter().map(|(_, name)| name).collect(),
    })
}

/// The largest value a size read from a config or GGUF file may take, by the key's meaning:
/// well past every published model, and small enough that what is allocated from it (a vector
/// per layer, a table per head) cannot overflow or take the machine's memory before the weights
/// are checked against it. Keys not listed are bounded by [`SIZE_LIMIT_OTHER`].
pub fn size_limit(key: &str) -> u64 {
    let key = key.rsplit('.').next().unwrap_or(key);
    match key {
        "num_hidden_layers" | "n_layer" | "block_count" => 1 << 12,
        "num_attention_heads"
        | "n_head"
        | "num_key_value_heads"
        | "head_count"
        | "head_count_kv" => 1 << 12,
        "head_dim" | "key_length" | "value_length" | "dimension_count" => 1 << 14,
        "hidden_size" | "n_embd" | "embedding_length" => 1 << 17,
        "intermediate_size" | "n_inner" | "feed_forward_length" => 1 << 20,
        "vocab_size" => 1 << 24,
        "max_position_embeddings" | "n_positions" | "n_ctx" | "context_length" => 1 << 28,
        "image_size" | "patch_size" => 1 << 16,
        "num_channels" | "num_register_tokens" | "type_vocab_size" => 1 << 16,
        _ => SIZE_LIMIT_OTHER,
    }
}

/// The bound on sizes [`size_limit`] does not name.
pub const SIZE_LIMIT_OTHER: u64 = 1 << 32;

/// `value` of `key` if it is within [`size_limit`], else the message saying it is not.
pub fn bounded_size(key: &str, value: u64) -> std::result::Result<usize, String> {
    let limit = size_limit(key);
    if value > limit {
        return Err(format!(
            "{key} = {value} is larger than any model this reads (at most {limit})"
        ));
    }
    usize::try_from(value).map_err(|_| format!("{key} = {value} does not fit this machine"))
}

fn field<'a>(json: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| json.get(*n).filter(|v| !v.is_null()))
}

impl ModelConfig {
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| EngineError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_json(&json, path)
    }

    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let bad = |reason: String| EngineError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no model_type".into()))?
            .to_string();
        // Families whose config.json spells the common fields differently, or nests them.
        let original = json;
        let rewritten = match model_type.as_str() {
            "distilbert" => Some(super::bert::distilbert_json(json)),
            "modernbert" => Some(super::modernbert::modernbert_json(json)),
            _ => super::vision_tower::tower_json(json, &model_type).map_err(bad)?,
        };
        let json = rewritten.as_ref().unwrap_or(json);
        let architecture = SUPPORTED_MODEL_TYPES
            .iter()
            .find(|(name, _)| *name == model_type)
            .map(|(_, arch)| *arch)
            .ok_or_else(|| EngineError::UnsupportedModelType {
                path: path.to_path_buf(),
                model_type: model_type.clone(),
                supported: supported_model_types(),
            })?;
        if architecture == Architecture::Gemma {
            return super::gemma::parse_config(json, path);
        }
        // Sizes are bounded as they are read: a layer count of 2^40 must not reach the vectors
        // allocated per layer below.
        let usize_of = |names: &[&str]| -> Result<usize> {
            let (name, value) = names
                .iter()
                .find_map(|n| Some((*n, field(json, &[n])?)))
                .and_then(|(n, v)| Some((n, v.as_u64()?)))
                .ok_or_else(|| bad(format!("missing or non-integer {}", names.join(" / "))))?;
            bounded_size(name, value).map_err(bad)
        };
        let layers = usize_of(&["num_hidden_layers", "n_layer"])?;
        let heads = usize_of(&["num_attention_heads", "n_head"])?;
        let hidden = usize_of(&["hidden_size", "n_embd"])?;
        let optional = |names: &[&str]| -> Result<Option<usize>> {
            match field(json, names) {
                None => Ok(None),
                Some(_) => usize_of(names).map(Some),
            }
        };
        let kv_heads = optional(&["num_key_value_heads"])?.unwrap_or(heads);
        let own_head_dim = field(json, &["head_dim"]).is_some() || model_type == "qwen3";
        if heads == 0 || hidden % heads != 0 && !own_head_dim {
            return Err(bad(format!(
                "hidden size {hidden} is not divisible by {heads} heads"
            )));
        }
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad(format!(
                "{heads} heads cannot be grouped over {kv_heads} kv heads"
            )));
        }
        let head_dim = optional(&["head_dim"])?.unwrap_or(hidden / heads);
        let mlp_ratio = field(json, &["mlp_ratio"])
            .and_then(Value::as_f64)
            .unwrap_or(4.0);
        let intermediate = match optional(&["intermediate_size", "n_inner"])? {
            Some(n) => n,
            None => bounded_size("intermediate_size", (mlp_ratio * hidden as f64) as u64)
                .map_err(|e| bad(format!("mlp_ratio {mlp_ratio} × hidden_size {hidden}: {e}")))?,
        };
        let vision = if matches!(architecture, Architecture::Vit | Architecture::VisionTower) {
            Some(vision_config(json, &model_type).map_err(bad)?)
        } else {
            None
        };
        // Image models have no vocabulary, and their positions are the trained patch grid
        // (which DINOv2 interpolates to other grids).
        let (vocab, max_positions) = match &vision {
            Some(v) => {
                let [rows, cols] = v.trained_grid();
                (0, rows * cols + v.prefix_tokens())
            }
            None => (
                usize_of(&["vocab_size"])?,
                usize_of(&["max_position_embeddings", "n_positions", "n_ctx"])?,
            ),
        };
        let encoder = if architecture == Architecture::Bert {
            Some(super::bert::EncoderOptions::from_json(json, &model_type).map_err(bad)?)
        } else {
            None
        };
        let modernbert = if architecture == Architecture::ModernBert {
            Some(super::modernbert::ModernBertOptions::from_json(original, layers).map_err(bad)?)
        } else {
            None
        };
        let max_positions = encoder
            .as_ref()
            .map_or(max_positions, |e| e.usable_positions(max_positions));
        let norm_eps = field(
            json,
            &["layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps"],
        )
        .and_then(Value::as_f64)
        .unwrap_or(match model_type.as_str() {
            "vit" | "deit" => 1e-12,
            "dinov2" | "dinov2_with_registers" => 1e-6,
            _ => 1e-5,
        });
        let act_name = field(json, &["hidden_act", "activation_function"])
            .and_then(Value::as_str)
            .unwrap_or(match architecture {
                Architecture::Bert
                | Architecture::Vit
                | Architecture::VisionTower
                | Architecture::ModernBert => "gelu",
                Architecture::Gpt2 => "gelu_new",
                Architecture::Llama => "silu",
                Architecture::Gemma => "gelu_pytorch_tanh",
            });
        let activation = Activation::parse(act_name).ok_or_else(|| {
            // Name the key as the user's file spells it: DistilBERT's `activation` reaches here
            // renamed to `hidden_act` (bert.rs), GPT-2 uses `activation_function`.
            let act_key = if model_type == "distilbert" {
                "activation"
            } else if field(json, &["hidden_act"]).is_none()
                && field(json, &["activation_function"]).is_some()
            {
                "activation_function"
            } else {
                "hidden_act"
            };
            bad(format!(
                "{act_key} = \"{act_name}\" is not supported; supported: gelu, gelu_new, \
                 gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, silu, swish"
            ))
        })?;
        let (mut head_dim, mut norm_eps, mut tie_word_embeddings) = (
            head_dim,
            norm_eps,
            field(json, &["tie_word_embeddings"])
                .and_then(Value::as_bool)
                .unwrap_or(architecture != Architecture::Llama),
        );
        let (layer_attention, llama, rope_theta) = match architecture {
            Architecture::Bert | Architecture::Vit => (
                vec![LayerAttention::standard(head_dim, false); layers],
                None,
                10000.0,
            ),
            Architecture::Gpt2 => (gpt2_attention(json, head_dim, layers), None, 10000.0),
            Architecture::Llama => {
                let family =
                    llama_config::read(json, &model_type, layers, heads, hidden, max_positions)
                        .map_err(bad)?;
                head_dim = family.head_dim;
                norm_eps = family.norm_eps;
                tie_word_embeddings = family.tie_word_embeddings;
                let theta = family.options.rope.theta;
                (family.layer_attention, Some(family.options), theta)
            }
            Architecture::Gemma => (
                vec![LayerAttention::standard(head_dim, true); layers],
                None,
                10000.0,
            ),
            Architecture::VisionTower => (
                vec![LayerAttention::standard(head_dim, false); layers],
                None,
                10000.0,
            ),
            Architecture::ModernBert => (
                modernbert
                    .iter()
                    .flat_map(|m| &m.layers)
                    .map(|l| LayerAttention {
                        window: l.window,
                        ..LayerAttention::standard(head_dim, true)
                    })
                    .collect(),
                None,
                10000.0,
            ),
        };
        if architecture == Architecture::Bert {
            let pos = field(json, &["position_embedding_type"]).and_then(Value::as_str);
            if !matches!(pos, None | Some("absolute")) {
                return Err(bad(format!(
                    "position_embedding_type {pos:?} is not supported"
                )));
            }
        }
        Ok(Self {
            architecture,
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
            rope_theta,
            type_vocab_size: optional(&["type_vocab_size"])?.unwrap_or(0),
            tie_word_embeddings,
            attention_bias: match &llama {
                Some(options) => options.qkv_bias,
                None => field(json, &["attention_bias", "qkv_bias"])
                    .and_then(Value::as_bool)
                    .unwrap_or(matches!(
                        architecture,
                        Architecture::Vit | Architecture::VisionTower
                    )),
            },
            vision,
            encoder,
            modernbert,
            model_type,
            layer_attention,
            gemma: None,
            llama,
        })
    }

    /// The hyper-parameters of a GGUF file: see [`super::gguf_config`].
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        super::gguf_config::read(file)
    }
}

/// GPT-2 divides the logits by sqrt(d) unless `scale_attn_weights` is false, and further by the
/// layer's number (counted from 1) when `scale_attn_by_inverse_layer_idx` is true.
fn gpt2_attention(json: &Value, head_dim: usize, layers: usize) -> Vec<LayerAttention> {
    let flag = |name: &str, default: bool| {
        field(json, &[name])
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let by_dim = flag("scale_attn_weights", true);
    let by_layer = flag("scale_attn_by_inverse_layer_idx", false);
    (0..layers)
        .map(|l| {
            let mut a = LayerAttention::standard(head_dim, false);
            if !by_dim {
                a.scale = 1.0;
            }
            if by_layer {
                a.scale /= (l + 1) as f32;
            }
            a
        })
        .collect()
}
