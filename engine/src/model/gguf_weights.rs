//! A GGUF file seen under Hugging Face's weight names, as transformers' GGUF loader maps them
//! (gguf-py's tensor names per architecture, which llama.cpp's converter writes): the query and
//! key rows put back in Hugging Face's order where the converter interleaves them for its RoPE
//! (the llama architecture only), Gemma's norms, which the converter stores as 1 + w, turned
//! back into w. Every tensor of the file must be one the forward pass reads: a tensor
//! transformers would drop (a bias its model has no place for, Phi-3's long-context RoPE
//! factors, a Gemma 2 output matrix) is refused by name rather than ignored.

use super::config::ModelConfig;
use super::gguf_file::GgufFile;
use super::rope::RopeScaling;
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use std::path::Path;

/// How an architecture's tensors are named and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// llama, mistral, qwen2, qwen3: q, k and v apart; `permuted` where llama.cpp's converter
    /// interleaves each q and k head's halves (and transformers un-interleaves them).
    Llama { permuted: bool },
    /// phi3: q, k and v in one `attn_qkv`; gate and up in one `ffn_up`.
    Phi3,
    /// gemma2, gemma3: norms around attention and the feed-forward, each stored as 1 + w;
    /// `output` only for Gemma 3 (gguf-py's Gemma 2 has no output tensor, so transformers
    /// never reads one).
    Gemma { output: bool },
}

pub struct GgufWeights {
    pub file: GgufFile,
    layout: Layout,
    heads: usize,
    kv_heads: usize,
}

impl GgufWeights {
    /// The file's weights for `config` (read from the same file), refused if the file holds a
    /// tensor the forward pass would not read.
    pub fn new(file: GgufFile, config: &ModelConfig) -> Result<Self> {
        let arch = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let layout = match arch.as_str() {
            "llama" | "mistral" => Layout::Llama { permuted: true },
            "qwen2" | "qwen3" => Layout::Llama { permuted: false },
            "phi3" => Layout::Phi3,
            "gemma2" => Layout::Gemma { output: false },
            "gemma3" => Layout::Gemma { output: true },
            other => {
                return Err(EngineError::BadConfig {
                    path: file.path().to_path_buf(),
                    reason: format!("no tensor layout for GGUF architecture '{other}'"),
                });
            }
        };
        let weights = Self {
            file,
            layout,
            heads: config.heads,
            kv_heads: config.kv_heads,
        };
        weights.refuse_unread_tensors(config, &arch)?;
        Ok(weights)
    }

    /// The GGUF name of a Hugging Face weight name, if the architecture stores it.
    fn gguf_name(&self, name: &str) -> Option<String> {
        let name = name.strip_prefix("model.").unwrap_or(name);
        Some(match name {
            "embed_tokens.weight" => "token_embd.weight".into(),
            "norm.weight" => "output_norm.weight".into(),
            "lm_head.weight" if self.layout != (Layout::Gemma { output: false }) => {
                "output.weight".into()
            }
            _ => {
                let rest = name.strip_prefix("layers.")?;
                let (layer, part) = rest.split_once('.')?;
                format!("blk.{layer}.{}", self.layer_part(part)?)
            }
        })
    }

    fn layer_part(&self, part: &str) -> Option<&'static str> {
        let shared = match part {
            "self_attn.q_proj.weight" => Some("attn_q.weight"),
            "self_attn.k_proj.weight" => Some("attn_k.weight"),
            "self_attn.v_proj.weight" => Some("attn_v.weight"),
            "self_attn.o_proj.weight" => Some("attn_output.weight"),
            "self_attn.q_norm.weight" => Some("attn_q_norm.weight"),
            "self_attn.k_norm.weight" => Some("attn_k_norm.weight"),
            "input_layernorm.weight" => Some("attn_norm.weight"),
            "mlp.down_proj.weight" => Some("ffn_down.weight"),
            _ => None,
        };
        if shared.is_some() {
            return shared;
        }
        Some(match (self.layout, part) {
            (Layout::Llama { .. }, "self_attn.q_proj.bias") => "attn_q.bias",
            (Layout::Llama { .. }, "self_attn.k_proj.bias") => "attn_k.bias",
            (Layout::Llama { .. }, "self_attn.v_proj.bias") => "attn_v.bias",
            (Layout::Llama { .. } | Layout::Phi3, "post_attention_layernorm.weight") => {
                "ffn_norm.weight"
            }
            (Layout::Llama { .. } | Layout::Gemma { .. }, "mlp.gate_proj.weight") => {
                "ffn_gate.weight"
            }
            (Layout::Llama { .. } | Layout::Gemma { .. }, "mlp.up_proj.weight") => "ffn_up.weight",
            (Layout::Phi3, "self_attn.qkv_proj.weight") => "attn_qkv.weight",
            (Layout::Phi3, "mlp.gate_up_proj.weight") => "ffn_up.weight",
            (Layout::Gemma { .. }, "post_attention_layernorm.weight") => {
                "post_attention_norm.weight"
            }
            (Layout::Gemma { .. }, "pre_feedforward_layernorm.weight") => "ffn_norm.weight",
            (Layout::Gemma { .. }, "post_feedforward_layernorm.weight") => "post_ffw_norm.weight",
            _ => return None,
        })
    }

    /// The Hugging Face names the forward pass of `config` reads.
    fn read_by_forward_pass(&self, config: &ModelConfig) -> Vec<String> {
        let mut names = vec![
            "model.embed_tokens.weight".to_string(),
            "model.norm.weight".to_string(),
        ];
        if !config.tie_word_embeddings {
            names.push("lm_head.weight".into());
        }
        let llama = config.llama.as_ref();
        let mut parts = vec![
            "input_layernorm",
            "post_attention_layernorm",
            "mlp.down_proj",
        ];
        match self.layout {
            Layout::Phi3 => parts.extend(["self_attn.qkv_proj", "mlp.gate_up_proj"]),
            _ => parts.extend([
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
            ]),
        }
        parts.push("self_attn.o_proj");
        if let Layout::Gemma { .. } = self.layout {
            parts.extend(["pre_feedforward_layernorm", "post_feedforward_layernorm"]);
        }
        let qk_norm = llama.is_some_and(|o| o.qk_norm)
            || config
                .gemma
                .as_ref()
                .is_some_and(|g| g.generation == super::gemma::Generation::Three);
        if qk_norm {
            parts.extend(["self_attn.q_norm", "self_attn.k_norm"]);
        }
        for i in 0..config.layers {
            for part in &parts {
                names.push(format!("model.layers.{i}.{part}.weight"));
            }
            if llama.is_some_and(|o| o.qkv_bias) {
                for p in ["q", "k", "v"] {
                    names.push(format!("model.layers.{i}.self_attn.{p}_proj.bias"));
                }
            }
        }
        names
    }

    /// Every tensor in the file is one the forward pass reads.
    fn refuse_unread_tensors(&self, config: &ModelConfig, arch: &str) -> Result<()> {
        let mut read: std::collections::HashSet<String> = self
            .read_by_forward_pass(config)
            .iter()
            .filter_map(|n| self.gguf_name(n))
            .collect();
        if config
            .llama
            .as_ref()
            .is_some_and(|o| matches!(o.rope.scaling, RopeScaling::Factors(_)))
        {
            read.insert("rope_freqs.weight".into());
        }
        let mut unread: Vec<&str> = self
            .file
            .tensor_names()
            .filter(|n| !read.contains(*n))
            .collect();
        unread.sort();
        if let Some(first) = unread.first() {
            return Err(EngineError::BadTensor {
                path: self.file.path().to_path_buf(),
                name: first.to_string(),
                reason: format!(
                    "not read by the {arch} forward pass (transformers' GGUF loader drops it, \
                     or it asks for what this engine does not compute); refused rather than \
                     computed without it ({} such tensor{})",
                    unread.len(),
                    if unread.len() == 1 { "" } else { "s" }
                ),
            });
        }
        Ok(())
    }
}

/// Undoes llama.cpp's `permute`: within each head, rows were reordered from
/// [first half | second half] to interleaved pairs.
pub fn unpermute_rows(t: &HostTensor, n_head: usize) -> HostTensor {
    let rows = t.shape[0];
    let cols: usize = t.shape[1..].iter().product();
    let half_dim = rows / n_head / 2;
    let mut data = vec![0.0; t.data.len()];
    for h in 0..n_head {
        for i in 0..half_dim {
            for j in 0..2 {
                let src = h * 2 * half_dim + i * 2 + j;
                let dst = h * 2 * half_dim + j * half_dim + i;
                data[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    HostTensor::new(t.shape.clone(), data)
}

impl WeightSource for GgufWeights {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn contains(&self, name: &str) -> bool {
        self.gguf_name(name)
            .is_some_and(|n| self.file.has_tensor(&n))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let gguf = self.gguf_name(name).ok_or_else(|| EngineError::Missing {
            path: self.file.path().to_path_buf(),
            what: format!("weight {name}"),
        })?;
        let t = self.file.tensor(&gguf)?;
        Ok(match self.layout {
            Layout::Llama { permuted: true } => {
                if gguf.ends_with("attn_q.weight") || gguf.ends_with("attn_q.bias") {
                    unpermute_rows(&t, self.heads)
                } else if gguf.ends_with("attn_k.weight") || gguf.ends_with("attn_k.bias") {
                    unpermute_rows(&t, self.kv_heads)
                } else {
                    t
                }
            }
            // As transformers' Gemma2TensorProcessor: w = stored - 1, in f32.
            Layout::Gemma { .. } if gguf.ends_with("norm.weight") => {
                HostTensor::new(t.shape, t.data.iter().map(|v| v - 1.0).collect())
            }
            _ => t,
        })
    }
}
