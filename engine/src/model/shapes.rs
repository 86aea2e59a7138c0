//! What each architecture needs of its weights, in one place: the shape every weight must have
//! given the config, checked as the weight is read, so that a checkpoint that disagrees with its
//! config (a transposed `key.weight`, a LayerScale of another rank, a flattened feed-forward
//! weight) is an error naming the file, the tensor and both shapes, never a panic inside a
//! tensor operation later. The Llama and Gemma loaders check their own weights as they load
//! them (`Linear::load_shaped`); the encoder and vision families are checked here, for every
//! format (safetensors and ONNX alike), by wrapping the weight source.

use super::config::{Architecture, ModelConfig};
use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use std::path::Path;

/// A dimension a rule fixes, or `None` for one the config does not determine (a position table's
/// length, which may be longer than the config asks).
type Dims = Vec<Option<usize>>;

/// A weight source whose tensors are checked against the shapes the config implies.
pub struct Checked<'a> {
    inner: &'a dyn WeightSource,
    /// (name suffix, shape): the first rule whose suffix ends a tensor's name applies.
    rules: Vec<(String, Dims)>,
}

impl<'a> Checked<'a> {
    /// Wraps `inner` with the rules of `config`'s architecture. Fails when the config itself
    /// cannot describe a consistent model (heads × head width that is not the hidden width, for
    /// the families that split the hidden state into heads).
    pub fn new(inner: &'a dyn WeightSource, config: &ModelConfig, path: &Path) -> Result<Self> {
        let splits_hidden = matches!(
            config.architecture,
            Architecture::Bert
                | Architecture::Gpt2
                | Architecture::Vit
                | Architecture::VisionTower
                | Architecture::ModernBert
        );
        if splits_hidden && config.heads.checked_mul(config.head_dim) != Some(config.hidden) {
            return Err(EngineError::BadConfig {
                path: path.to_path_buf(),
                reason: format!(
                    "{} heads of {} dimensions do not make the hidden size {}",
                    config.heads, config.head_dim, config.hidden
                ),
            });
        }
        Ok(Self {
            inner,
            rules: rules(config),
        })
    }
}

/// `name` (a Linear layer, e.g. `attention.self.query`): its weight [out, in] and bias [out].
fn linear(rules: &mut Vec<(String, Dims)>, name: &str, out: usize, input: usize) {
    rules.push((format!("{name}.weight"), vec![Some(out), Some(input)]));
    rules.push((format!("{name}.bias"), vec![Some(out)]));
}

/// A norm's weight and bias (or gamma and beta) of `len` values.
fn norm(rules: &mut Vec<(String, Dims)>, name: &str, len: usize) {
    for part in ["weight", "bias", "gamma", "beta"] {
        rules.push((format!("{name}.{part}"), vec![Some(len)]));
    }
}

/// The rules of each architecture, most specific suffix first
/// (`attention.output.dense` before `output.dense`).
fn rules(c: &ModelConfig) -> Vec<(String, Dims)> {
    let (h, i) = (c.hidden, c.intermediate);
    let mut r = Vec::new();
    match c.architecture {
        Architecture::Bert => {
            for name in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
            ] {
                linear(&mut r, name, h, h);
            }
            linear(&mut r, "attention.output.dense", h, h);
            linear(&mut r, "intermediate.dense", i, h);
            linear(&mut r, "output.dense", h, i);
            for name in ["attention.q_lin", "attention.k_lin", "attention.v_lin"] {
                linear(&mut r, name, h, h);
            }
            linear(&mut r, "attention.out_lin", h, h);
            linear(&mut r, "ffn.lin1", i, h);
            linear(&mut r, "ffn.lin2", h, i);
            for name in ["LayerNorm", "sa_layer_norm", "output_layer_norm"] {
                norm(&mut r, name, h);
            }
            r.push((
                "word_embeddings.weight".into(),
                vec![Some(c.vocab), Some(h)],
            ));
            r.push(("position_embeddings.weight".into(), vec![None, Some(h)]));
            r.push(("token_type_embeddings.weight".into(), vec![None, Some(h)]));
        }
        Architecture::Gpt2 => {
            // Conv1D stores [in, out].
            r.push(("attn.c_attn.weight".into(), vec![Some(h), Some(3 * h)]));
            r.push(("attn.c_attn.bias".into(), vec![Some(3 * h)]));
            r.push(("attn.c_proj.weight".into(), vec![Some(h), Some(h)]));
            r.push(("attn.c_proj.bias".into(), vec![Some(h)]));
            r.push(("mlp.c_fc.weight".into(), vec![Some(h), Some(i)]));
            r.push(("mlp.c_fc.bias".into(), vec![Some(i)]));
            r.push(("mlp.c_proj.weight".into(), vec![Some(i), Some(h)]));
            r.push(("mlp.c_proj.bias".into(), vec![Some(h)]));
            for name in ["ln_1", "ln_2", "ln_f"] {
                norm(&mut r, name, h);
            }
            r.push(("wte.weight".into(), vec![Some(c.vocab), Some(h)]));
            r.push(("wpe.weight".into(), vec![None, Some(h)]));
            r.push(("lm_head.weight".into(), vec![Some(c.vocab), Some(h)]));
        }
        Architecture::Vit | Architecture::VisionTower => {
            for name in [
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
            ] {
                linear(&mut r, name, h, h);
            }
            linear(&mut r, "attention.output.dense", h, h);
            linear(&mut r, "intermediate.dense", i, h);
            linear(&mut r, "output.dense", h, i);
            linear(&mut r, "mlp.fc1", i, h);
            linear(&mut r, "mlp.fc2", h, i);
            for name in ["layer_scale1.lambda1", "layer_scale2.lambda1"] {
                r.push((name.into(), vec![Some(h)]));
            }
            for name in [
                "layernorm_before",
                "layernorm_after",
                "norm1",
                "norm2",
                "layernorm",
                "layer_norm1",
                "layer_norm2",
                "pre_layrnorm",
                "post_layernorm",
            ] {
                norm(&mut r, name, h);
            }
            // Classifiers: [labels, in], where DINOv2's `in` is CLS and the mean patch (2h);
            // the rank is what matters (a 1-D weight cannot be transposed).
            for name in ["classifier", "cls_classifier", "distillation_classifier"] {
                r.push((format!("{name}.weight"), vec![None, None]));
                r.push((format!("{name}.bias"), vec![None]));
            }
            if let Some(v) = &c.vision {
                let [ph, pw] = v.patch_size;
                let conv = vec![Some(h), Some(v.channels), Some(ph), Some(pw)];
                r.push(("patch_embeddings.projection.weight".into(), conv.clone()));
                r.push(("patch_embeddings.projection.bias".into(), vec![Some(h)]));
                r.push((
                    "embeddings.cls_token".into(),
                    vec![Some(1), Some(1), Some(h)],
                ));
                r.push((
                    "embeddings.distillation_token".into(),
                    vec![Some(1), Some(1), Some(h)],
                ));
                r.push((
                    "embeddings.position_embeddings".into(),
                    vec![Some(1), None, Some(h)],
                ));
            }
        }
        Architecture::ModernBert => {
            r.push(("attn.Wqkv.weight".into(), vec![Some(3 * h), Some(h)]));
            r.push(("attn.Wo.weight".into(), vec![Some(h), Some(h)]));
            r.push(("mlp.Wi.weight".into(), vec![Some(2 * i), Some(h)]));
            r.push(("mlp.Wo.weight".into(), vec![Some(h), Some(i)]));
            for name in ["attn_norm", "mlp_norm", "final_norm", "embeddings.norm"] {
                norm(&mut r, name, h);
            }
            r.push(("tok_embeddings.weight".into(), vec![Some(c.vocab), Some(h)]));
        }
        // Checked by their own loaders, weight by weight.
        Architecture::Llama | Architecture::Gemma => {}
    }
    r
}

impl WeightSource for Checked<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let t = self.inner.tensor(name)?;
        // A name matches a rule at a boundary: `x.norm1.weight` ends with `norm1.weight`, and
        // `xnorm1.weight` does not.
        let rule = self.rules.iter().find(|(suffix, _)| {
            name.strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        });
        if let Some((_, dims)) = rule {
            let fits = t.shape.len() == dims.len()
                && t.shape
                    .iter()
                    .zip(dims)
                    .all(|(&n, d)| d.is_none_or(|d| d == n));
            // The product as well: a reader could hand a shape whose values it did not check.
            let count = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if !fits || count != Some(t.data.len()) {
                let shown: Vec<String> = dims
                    .iter()
                    .map(|d| d.map_or("any".into(), |d| d.to_string()))
                    .collect();
                return Err(EngineError::BadTensor {
                    path: self.path().to_path_buf(),
                    name: name.to_string(),
                    reason: format!(
                        "shape {:?}, the config implies [{}]",
                        t.shape,
                        shown.join(", ")
                    ),
                });
            }
        }
        Ok(t)
    }
}
