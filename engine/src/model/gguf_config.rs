//! What each GGUF architecture reads from its `{arch}.*` metadata, and what it refuses.
//!
//! The reference is transformers reading the same file: its GGUF loader maps a few keys per
//! architecture onto the config class (`GGUF_CONFIG_MAPPING` in `transformers/integrations/
//! ggml.py`) and the class's defaults fill the rest. So a setting is read here where transformers
//! reads it, and otherwise takes that class default. A key that would change the computation
//! (for llama.cpp, which wrote it) and that transformers ignores is refused by name, with its
//! value and what is supported, rather than computed one way or the other. So is every
//! `{arch}.*` key this reader does not know: an unknown key may change the forward pass.
//!
//! The tensors are checked the same way, in [`super::gguf_weights`]: a tensor the forward pass
//! does not read (a bias transformers drops, Phi-3's long-context RoPE factors) is refused.

use super::config::{Activation, Architecture, ModelConfig, bounded_size};
use super::gguf_file::{GgufFile, GgufValue};
use super::llama_config::LlamaOptions;
use super::rope::{Rope, RopeScaling};
use crate::attention::LayerAttention;
use crate::error::{EngineError, Result};
use serde_json::{Value, json};

/// The `general.architecture` values read, each with the model type it becomes.
pub const GGUF_ARCHITECTURES: &[(&str, &str)] = &[
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen3"),
    ("phi3", "phi3"),
    ("gemma2", "gemma2"),
    // transformers reads a gemma3 GGUF file as the text model.
    ("gemma3", "gemma3_text"),
];

/// The `{arch}.*` keys read (or checked) for every architecture.
const COMMON_KEYS: &[&str] = &[
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "vocab_size",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.attn_factor",
    // Only a scaling that this reader refuses would use them.
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",
    "expert_count",
    "expert_used_count",
    "attention.sliding_window",
];

/// Keys read by some architectures only: refused elsewhere by the checks below.
const FAMILY_KEYS: &[&str] = &[
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "rope.freq_base_swa",
];

/// The metadata reader of one file, for one architecture.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn bad(&self, reason: String) -> EngineError {
        EngineError::BadConfig {
            path: self.file.path().to_path_buf(),
            reason,
        }
    }

    /// "arch.key = value: why".
    fn refuse(&self, k: &str, value: impl std::fmt::Display, why: &str) -> EngineError {
        self.bad(format!("{} = {value}: {why}", self.key(k)))
    }

    fn get(&self, k: &str) -> Option<&GgufValue> {
        self.file.get(&self.key(k))
    }

    fn shown(&self, k: &str) -> Option<String> {
        self.get(k).map(show_gguf)
    }

    /// A size, bounded as read so that a block_count of 2^64 - 1 is an error, not a vector of
    /// that many layers.
    fn int(&self, k: &str) -> Result<usize> {
        let name = self.key(k);
        let value = self
            .get(k)
            .ok_or_else(|| self.bad(format!("missing {name}")))?;
        let value = value.as_u64().ok_or_else(|| {
            self.refuse(k, show_gguf(value), "expected a non-negative whole number")
        })?;
        bounded_size(&name, value).map_err(|e| self.bad(e))
    }

    /// Absent is None; present but not a size within bounds is an error.
    fn opt_int(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(_) => self.int(k).map(Some),
        }
    }

    fn float(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.refuse(k, show_gguf(v), "expected a finite number")),
            },
        }
    }

    /// Every `{arch}.*` key must be one this reader knows.
    fn refuse_unknown_keys(&self, family: &[&str]) -> Result<()> {
        let prefix = format!("{}.", self.arch);
        let mut keys: Vec<&String> = self.file.metadata.keys().collect();
        keys.sort();
        for name in keys {
            let Some(k) = name.strip_prefix(&prefix) else {
                continue;
            };
            if !COMMON_KEYS.contains(&k) && !family.contains(&k) {
                let value = self.get(k).map(show_gguf).unwrap_or_default();
                return Err(self.refuse(
                    k,
                    value,
                    &format!(
                        "not a key this reader knows for {} (it may change the forward pass); \
                         known: {}",
                        self.arch,
                        COMMON_KEYS
                            .iter()
                            .chain(family)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn vocab(&self) -> Result<usize> {
        match self.opt_int("vocab_size")? {
            Some(v) => Ok(v),
            None => self
                .file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(<[_]>::len)
                .ok_or_else(|| self.bad("no vocab size".into())),
        }
    }

    /// Sizes every architecture shares: layers, hidden width, heads, kv heads, head width.
    /// `head_dim_default` is the width when `attention.key_length` is absent.
    fn shape(&self, head_dim_default: Option<usize>) -> Result<Shape> {
        let layers = self.int("block_count")?;
        let hidden = self.int("embedding_length")?;
        let heads = self.int("attention.head_count")?;
        let kv_heads = self.opt_int("attention.head_count_kv")?.unwrap_or(heads);
        let key_length = self.opt_int("attention.key_length")?;
        let by_width = key_length.is_none() && head_dim_default.is_none();
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || (by_width && hidden % heads != 0)
        {
            return Err(self.bad(format!(
                "inconsistent heads {heads} / kv heads {kv_heads} / hidden {hidden}"
            )));
        }
        let head_dim = key_length.or(head_dim_default).unwrap_or(hidden / heads);
        if head_dim == 0 {
            return Err(self.refuse("attention.key_length", 0, "a head needs a dimension"));
        }
        if let Some(value_length) = self.opt_int("attention.value_length")?
            && value_length != head_dim
        {
            return Err(self.refuse(
                "attention.value_length",
                value_length,
                &format!("differs from the key length {head_dim}; supported: equal"),
            ));
        }
        if let Some(rotary) = self.opt_int("rope.dimension_count")?
            && rotary != head_dim
        {
            return Err(self.refuse(
                "rope.dimension_count",
                rotary,
                &format!(
                    "partial rotary embeddings are not supported (transformers' GGUF loader \
                     rotates the whole head); supported: {head_dim}"
                ),
            ));
        }
        if let Some(n) = self.opt_int("expert_count")?
            && n > 0
        {
            return Err(self.refuse(
                "expert_count",
                n,
                "mixture-of-experts feed-forward is not supported (dense models only)",
            ));
        }
        Ok(Shape {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
        })
    }

    /// The RoPE scaling: none, or (llama and mistral only) linear; llama.cpp's other scalings
    /// are not in transformers' GGUF mapping.
    fn rope_scaling(&self, linear: bool) -> Result<RopeScaling> {
        let kind = self.get("rope.scaling.type");
        let scaling = match kind.map(|v| v.as_str()) {
            None | Some(Some("none")) => RopeScaling::None,
            Some(Some("linear")) if linear => RopeScaling::Linear {
                factor: self
                    .float("rope.scaling.factor")?
                    .filter(|f| *f > 0.0)
                    .ok_or_else(|| {
                        self.bad(format!(
                            "{} missing or not positive",
                            self.key("rope.scaling.factor")
                        ))
                    })?,
            },
            Some(_) => {
                let supported = if linear {
                    "none, linear (and Llama 3's rope_freqs tensor)"
                } else {
                    "none (transformers' GGUF loader does not read RoPE scaling for this \
                     architecture)"
                };
                return Err(self.refuse(
                    "rope.scaling.type",
                    kind.map(show_gguf).unwrap_or_default(),
                    &format!("not supported; supported: {supported}"),
                ));
            }
        };
        if let Some(f) = self
            .float("rope.scaling.attn_factor")?
            .filter(|f| *f != 1.0)
        {
            return Err(self.refuse("rope.scaling.attn_factor", f, "not supported; supported: 1"));
        }
        Ok(scaling)
    }

    /// The RMSNorm epsilon, or the config class's default when the file has none.
    fn norm_eps(&self, default: f64) -> Result<f64> {
        Ok(self
            .float("attention.layer_norm_rms_epsilon")?
            .unwrap_or(default))
    }
}

struct Shape {
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The hyper-parameters of a GGUF file, from its `general.architecture` and `{arch}.*` metadata.
pub fn read(file: &GgufFile) -> Result<ModelConfig> {
    let path = file.path();
    let arch = file
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| EngineError::BadConfig {
            path: path.to_path_buf(),
            reason: "no general.architecture".into(),
        })?;
    if !GGUF_ARCHITECTURES.iter().any(|(a, _)| *a == arch) {
        return Err(EngineError::UnsupportedModelType {
            path: path.to_path_buf(),
            model_type: arch.to_string(),
            supported: GGUF_ARCHITECTURES.iter().map(|(a, _)| *a).collect(),
        });
    }
    let meta = Meta { file, arch };
    match arch {
        "gemma2" | "gemma3" => gemma(&meta),
        _ => llama_family(&meta),
    }
}

/// llama, mistral, qwen2, qwen3 and phi3: the Llama forward pass (`llama.rs`).
fn llama_family(meta: &Meta) -> Result<ModelConfig> {
    let arch = meta.arch;
    meta.refuse_unknown_keys(FAMILY_KEYS)?;
    for k in FAMILY_KEYS {
        if let Some(value) = meta.shown(k) {
            return Err(meta.refuse(
                k,
                value,
                &format!("not part of the {arch} forward pass this engine computes"),
            ));
        }
    }
    let shape = meta.shape(None)?;
    let Shape {
        layers, head_dim, ..
    } = shape;
    let max_positions = meta.int("context_length")?;
    let window = match (arch, meta.opt_int("attention.sliding_window")?) {
        // transformers reads a mistral GGUF into its Mistral config, whose window defaults to
        // 4096.
        ("mistral", Some(w)) if w > 0 => Some(w),
        ("mistral", None) => Some(4096),
        // llama.cpp's converter writes Phi-3's window (0 for none); transformers' GGUF loader
        // does not read it, so only a window that masks nothing is the same computation.
        ("phi3", Some(w)) if w == 0 || w >= max_positions => None,
        (_, None) => None,
        (_, Some(w)) => {
            let supported = if arch == "phi3" {
                format!(
                    "transformers' GGUF loader ignores Phi-3's window; supported: 0 or at \
                     least context_length ({max_positions})"
                )
            } else {
                format!("{arch} has no sliding window; supported for mistral")
            };
            return Err(meta.refuse("attention.sliding_window", w, &supported));
        }
    };
    let scaling = meta.rope_scaling(matches!(arch, "llama" | "mistral"))?;
    // Llama 3's frequency scaling, as llama.cpp's converter stores it: one divisor per
    // frequency. transformers' loader ignores the tensor; the file is read as the original
    // checkpoint computes, which llama.cpp's converter derived the divisors from.
    let scaling = if arch == "llama" && meta.file.has_tensor("rope_freqs.weight") {
        if scaling != RopeScaling::None {
            return Err(
                meta.bad("both rope_freqs.weight and a rope.scaling.type: not supported".into())
            );
        }
        let factors = meta.file.tensor("rope_freqs.weight")?;
        if factors.data.len() != head_dim / 2 || factors.data.iter().any(|f| *f <= 0.0) {
            return Err(meta.bad(format!(
                "rope_freqs.weight holds {} values; expected {} positive frequency factors",
                factors.data.len(),
                head_dim / 2
            )));
        }
        RopeScaling::Factors(factors.data.to_vec())
    } else {
        scaling
    };
    let rope_theta = meta.float("rope.freq_base")?.unwrap_or(10000.0);
    if rope_theta <= 0.0 {
        return Err(meta.refuse("rope.freq_base", rope_theta, "must be positive"));
    }
    let llama = LlamaOptions {
        rope: Rope {
            theta: rope_theta,
            rotary_dim: head_dim,
            scaling,
        },
        // Qwen2's projections always have biases; the other config classes default to none,
        // and transformers drops a bias tensor its model has no place for (so one is refused).
        qkv_bias: arch == "qwen2",
        o_bias: false,
        mlp_bias: false,
        qk_norm: arch == "qwen3",
        fused: arch == "phi3",
        post_norms: false,
    };
    let layer_attention = vec![
        LayerAttention {
            window,
            ..LayerAttention::standard(head_dim, true)
        };
        layers
    ];
    Ok(ModelConfig {
        model_type: arch.to_string(),
        architecture: Architecture::Llama,
        layers,
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        hidden: shape.hidden,
        head_dim,
        intermediate: meta.int("feed_forward_length")?,
        vocab: meta.vocab()?,
        max_positions,
        // Phi3Config's default; the other classes' is 1e-6.
        norm_eps: meta.norm_eps(if arch == "phi3" { 1e-5 } else { 1e-6 })?,
        activation: Activation::Silu,
        rope_theta,
        type_vocab_size: 0,
        tie_word_embeddings: !meta.file.has_tensor("output.weight"),
        attention_bias: llama.qkv_bias,
        vision: None,
        layer_attention,
        llama: Some(llama),
        gemma: None,
        encoder: None,
        modernbert: None,
    })
}

/// The attention-logit scale transformers assumes for a Gemma GGUF file (its
/// `query_pre_attn_scalar` default; no GGUF key carries it), and the head width at which
/// llama.cpp's scale (1/sqrt(head width), but for its 27B sizes) agrees with it.
const GEMMA_QUERY_PRE_ATTN_SCALAR: usize = 256;

/// gemma2 and gemma3 (text): read into the config transformers builds from the file, then
/// through the same reader as a Hugging Face folder, whose class defaults fill what the file
/// does not carry.
fn gemma(meta: &Meta) -> Result<ModelConfig> {
    let arch = meta.arch;
    let two = arch == "gemma2";
    let family: &[&str] = if two {
        &["attn_logit_softcapping", "final_logit_softcapping"]
    } else {
        &[
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "rope.freq_base_swa",
        ]
    };
    meta.refuse_unknown_keys(family)?;
    let shape = meta.shape(Some(GEMMA_QUERY_PRE_ATTN_SCALAR))?;
    if shape.head_dim != GEMMA_QUERY_PRE_ATTN_SCALAR {
        return Err(meta.refuse(
            "attention.key_length",
            shape.head_dim,
            &format!(
                "a GGUF file does not carry Gemma's query_pre_attn_scalar: transformers assumes \
                 {GEMMA_QUERY_PRE_ATTN_SCALAR} and llama.cpp 1/sqrt(head width), which agree \
                 only for heads of {GEMMA_QUERY_PRE_ATTN_SCALAR}; supported: \
                 {GEMMA_QUERY_PRE_ATTN_SCALAR}"
            ),
        ));
    }
    if two {
        // Gemma2Config's defaults, which transformers computes with whatever the file says.
        for (k, default) in [
            ("attn_logit_softcapping", 50.0),
            ("final_logit_softcapping", 30.0),
        ] {
            if let Some(v) = meta.float(k)?
                && v != default
            {
                return Err(meta.refuse(
                    k,
                    v,
                    &format!(
                        "transformers' GGUF loader ignores this key and soft-caps at \
                         {default}; supported: {default}"
                    ),
                ));
            }
        }
    } else {
        for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = meta.shown(k) {
                return Err(meta.refuse(
                    k,
                    v,
                    "transformers' GGUF loader ignores this key and Gemma 3 (text) does not \
                     soft-cap; supported: absent",
                ));
            }
        }
        if let Some(v) = meta.float("rope.freq_base_swa")?
            && v != 10000.0
        {
            return Err(meta.refuse(
                "rope.freq_base_swa",
                v,
                "transformers' GGUF loader ignores this key and rotates sliding layers with \
                 base 10000; supported: 10000",
            ));
        }
    }
    meta.rope_scaling(false)?;
    let mut json = json!({
        "model_type": if two { "gemma2" } else { "gemma3_text" },
        "num_hidden_layers": shape.layers,
        "hidden_size": shape.hidden,
        "intermediate_size": meta.int("feed_forward_length")?,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "max_position_embeddings": meta.int("context_length")?,
        "vocab_size": meta.vocab()?,
        "tie_word_embeddings": !meta.file.has_tensor("output.weight"),
    });
    let mut set = |key: &str, value: Value| json[key] = value;
    if let Some(eps) = meta.float("attention.layer_norm_rms_epsilon")? {
        set("rms_norm_eps", json!(eps));
    }
    if let Some(theta) = meta.float("rope.freq_base")? {
        if theta <= 0.0 {
            return Err(meta.refuse("rope.freq_base", theta, "must be positive"));
        }
        set("rope_theta", json!(theta));
    }
    if let Some(window) = meta.opt_int("attention.sliding_window")? {
        if window == 0 {
            return Err(meta.refuse(
                "attention.sliding_window",
                0,
                "supported: a positive number of tokens",
            ));
        }
        set("sliding_window", json!(window));
    }
    super::gemma::parse_config(&json, meta.file.path())
}

/// A GGUF metadata value as a refusal message shows it.
pub fn show_gguf(value: &GgufValue) -> String {
    match value {
        GgufValue::Int(v) => v.to_string(),
        GgufValue::UInt(v) => v.to_string(),
        GgufValue::Float(v) => v.to_string(),
        GgufValue::Bool(v) => v.to_string(),
        GgufValue::Str(v) => format!("\"{v}\""),
        GgufValue::Array(items) => format!("[{} values]", items.len()),
    }
}
