//! The session file: one `.safetensors` file holding every input's attention, queries and keys
//! plus JSON metadata under the key `headwise`. Other programs read it (it is a contract; see
//! DESIGN.md), so names, shapes and metadata fields are fixed here and checked on reading.

use crate::analysis::projection::Method;
use crate::atomic_file::write_atomically;
use crate::error::{EngineError, Result};
use crate::host::{Floats, HostTensor};
use crate::imaging::{PreparedImage, RgbImage};
use crate::model::gradients::{GradientFigures, Target};
use crate::model::safetensors_file::decode_floats;
use crate::model::{Model, to_vec};
use crate::rebuild::{QkAttention, looks_causal, rebuild_attention};
use crate::tokenizer::Encoded;
use crate::trace::{AttentionCapture, LayerAttention, MASSIVE_ROWS, Trace, attention_bytes};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The newest format this build writes and reads. Format 2 adds `lse/{input}/{layer}` and
/// `model.attention`; format 1 files (without them) stay readable.
pub const FORMAT_VERSION: u32 = 2;
/// The safetensors metadata key that holds the session's JSON.
pub const METADATA_KEY: &str = "headwise";
/// Session files up to this size are copied into memory when opened, so that nothing done to
/// the file afterwards reaches the open session; larger ones are mapped.
pub const COPY_ON_OPEN_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    /// What the user opened: a path, a fetched model's name or a Hugging Face repo id.
    pub source: String,
    #[serde(rename = "type")]
    pub model_type: String,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// How each layer's logits follow from q and k (format 2). Empty in format 1 files: there
    /// the logits are `q·k/sqrt(head_dim)`, without soft-cap or window, and whether RoPE
    /// applied is unknown (see [`Session::layer_attention`]).
    #[serde(default)]
    pub attention: Vec<LayerAttention>,
    /// Whether each layer masks later keys, where the file says so (`model.attention[l].causal`,
    /// as the Python capture writes it); else it is read off the lse (see [`looks_causal`]).
    #[serde(skip)]
    pub causal: Vec<Option<bool>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Text,
    Image,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NextToken {
    pub id: u32,
    pub token: String,
    pub prob: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputInfo {
    pub kind: InputKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// As displayed ('Ġthe' shown as ' the'); for images `[CLS]`, `[DIST]`, `[REG0]` … then
    /// each patch as `(row,col)`.
    pub tokens: Vec<String>,
    /// Text: the tokenizer's ids. Images: each token's position.
    pub token_ids: Vec<u32>,
    /// Images: the patch grid [rows, cols].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_grid: Option<[usize; 2]>,
    /// Images: tokens before the patches (CLS, distillation, registers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_tokens: Option<usize>,
    /// Images: one patch's [height, width] in the stored picture's pixels (the grid covers
    /// rows × height by cols × width of it; a remainder at the right or bottom is unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<[usize; 2]>,
    /// Decoders: the most likely next tokens after the input; image classifiers: the most
    /// likely classes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_tokens: Vec<NextToken>,
    /// Positions of the tokenizer's special tokens ([CLS], [SEP], BOS …), so views can hide
    /// them and measure attention to them without the model at hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub special_tokens: Vec<usize>,
    /// A retrieval probe's needle and answer (`headwise probe retrieval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::analysis::retrieval::ProbeLayout>,
    /// The edits this input's run was made with, as given on the command line (`ablate:L.H`,
    /// `ablate-mean:L.H`, `scale:L.H:K=F`; see [`crate::edits`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<String>,
    /// The unedited input with the same tokens, if it is in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<usize>,
    /// How many of the input's last tokens the model generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<usize>,
    /// What the stored gradients (`importance/`, `grad_attn/`, `relevance/`) differentiate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The model that made this run, when it is not the session's (`headwise compare`: a
    /// second model of the same shape; `base` then points at the first model's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl InputInfo {
    /// What the input's `scale` edits add to layer `layer`'s logits of each key, [heads, T];
    /// None without them (or with edits that do not parse: the reader refuses those).
    pub fn edit_bias(&self, layer: usize, heads: usize) -> Option<Vec<f32>> {
        if self.edits.is_empty() {
            return None;
        }
        let edits = crate::edits::parse_all(&self.edits).ok()?;
        crate::edits::LayerEdits::of(&edits, layer, heads)?.bias(heads, self.tokens.len())
    }
}

impl InputInfo {
    /// Images: the token of the patch under a point of the stored picture (in its pixels), or
    /// None outside the patch grid. Patches come after the prefix tokens, row by row.
    pub fn token_at(&self, x: f32, y: f32) -> Option<usize> {
        let ([rows, cols], [ph, pw]) = (self.patch_grid?, self.patch_size?);
        if x < 0.0 || y < 0.0 {
            return None;
        }
        let (row, col) = ((y / ph as f32) as usize, (x / pw as f32) as usize);
        (row < rows && col < cols).then(|| self.prefix_tokens.unwrap_or(0) + row * cols + col)
    }

    /// Images: the [row, col] of a patch token, or None for a prefix token.
    pub fn patch_of(&self, token: usize) -> Option<[usize; 2]> {
        let [rows, cols] = self.patch_grid?;
        let patch = token.checked_sub(self.prefix_tokens.unwrap_or(0))?;
        (patch < rows * cols).then(|| [patch / cols, patch % cols])
    }

    /// One flag per token: is it one of the tokenizer's special tokens?
    pub fn special_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.tokens.len()];
        for &i in &self.special_tokens {
            if let Some(m) = mask.get_mut(i) {
                *m = true;
            }
        }
        mask
    }
}

#[cfg(test)]
mod patch_geometry {
    use super::*;

    fn image_input(grid: [usize; 2], patch: [usize; 2], prefix: usize) -> InputInfo {
        InputInfo {
            kind: InputKind::Image,
            text: None,
            image: Some("picture.png".into()),
            tokens: Vec::new(),
            token_ids: Vec::new(),
            patch_grid: Some(grid),
            prefix_tokens: Some(prefix),
            patch_size: Some(patch),
            next_tokens: Vec::new(),
            special_tokens: Vec::new(),
            probe: None,
            edits: Vec::new(),
            base: None,
            generated: None,
            target: None,
            model: None,
        }
    }

    #[test]
    fn a_point_maps_to_its_patch_on_a_non_square_grid_after_the_prefix_tokens() {
        // DINOv2 with 4 registers: CLS + 4 prefix tokens; a 3 × 5 grid of 14-pixel patches.
        let input = image_input([3, 5], [14, 14], 5);
        assert_eq!(input.token_at(0.0, 0.0), Some(5));
        assert_eq!(input.token_at(13.9, 13.9), Some(5));
        assert_eq!(input.token_at(14.0, 0.0), Some(6));
        assert_eq!(
            input.token_at(69.9, 0.0),
            Some(9),
            "last column of the first row"
        );
        assert_eq!(
            input.token_at(0.0, 14.0),
            Some(10),
            "first column of the second row"
        );
        assert_eq!(input.token_at(69.9, 41.9), Some(19), "last patch");
        assert_eq!(input.patch_of(19), Some([2, 4]));
        assert_eq!(input.patch_of(10), Some([1, 0]));
    }

    #[test]
    fn points_outside_the_grid_and_prefix_tokens_have_no_patch() {
        // DeiT: CLS and distillation token; 16-pixel patches on a 2 × 3 grid, with a strip of
        // the picture to the right that no patch covers.
        let input = image_input([2, 3], [16, 16], 2);
        assert_eq!(input.token_at(48.0, 0.0), None, "past the last column");
        assert_eq!(input.token_at(0.0, 32.0), None, "past the last row");
        assert_eq!(input.token_at(-1.0, 5.0), None);
        assert_eq!(input.patch_of(0), None, "CLS");
        assert_eq!(input.patch_of(1), None, "distillation token");
        assert_eq!(input.patch_of(2), Some([0, 0]));
        assert_eq!(input.patch_of(8), None, "past the grid");
    }

    #[test]
    fn rectangular_patches_map_rows_and_columns_separately() {
        let input = image_input([2, 2], [10, 20], 1);
        assert_eq!(input.token_at(19.0, 9.0), Some(1));
        assert_eq!(input.token_at(20.0, 9.0), Some(2));
        assert_eq!(input.token_at(19.0, 10.0), Some(3));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionMeta {
    pub format_version: u32,
    pub model: ModelInfo,
    pub inputs: Vec<InputInfo>,
    /// The app's view state, restored on opening; opaque to the engine.
    #[serde(default)]
    pub view: serde_json::Value,
    /// How the stored query-key projections (`proj/{method}/…`) were made, by method name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projections: BTreeMap<String, ProjectionInfo>,
}

/// The settings a method's stored projections were made with, to reproduce them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ProjectionInfo {
    pub dims: usize,
    pub seed: u64,
}

/// What [`Session::qk_parts`] hands out: one layer of one input's q, k and lse, and how its
/// logits follow from them.
pub struct QkParts<'a> {
    pub q: &'a HostTensor,
    pub k: &'a HostTensor,
    pub key_bias: Option<&'a HostTensor>,
    pub lse: Vec<f32>,
    pub attention: LayerAttention,
    pub causal: bool,
}

impl QkParts<'_> {
    /// The attention these parts define.
    pub fn attention(&self) -> QkAttention<'_> {
        let attention = QkAttention::new(self.q, self.k, &self.lse, self.attention, self.causal)
            .expect("shapes checked by Session::qk_parts");
        match self.key_bias {
            Some(bias) => attention.with_key_bias(&bias.data),
            None => attention,
        }
    }
}

/// One layer of one input, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTensors {
    /// [heads, T, T] when the run materialised it or it was small enough to rebuild on
    /// opening; else read through [`Session::qk_attention`].
    pub attn: Option<HostTensor>,
    pub q: HostTensor,
    pub k: HostTensor,
    /// Log-weights added to each key's logits, [kv_heads, T], in a session derived for display
    /// (value-weighted attention); never in a file.
    pub key_bias: Option<HostTensor>,
}

/// A tensor the engine does not interpret (projections, metrics, pixels), kept byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub meta: SessionMeta,
    /// `layers[input][layer]`
    pub layers: Vec<Vec<LayerTensors>>,
    pub extras: BTreeMap<String, ExtraTensor>,
    /// The precision the attention, queries and keys were read in (or will be written in),
    /// so that adding projections to an f16 session keeps it f16.
    pub dtype: StoreDtype,
}

/// The precision of the attention, query and key tensors in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreDtype {
    #[default]
    F32,
    F16,
}

impl std::str::FromStr for StoreDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown dtype '{other}' (f32 or f16)")),
        }
    }
}

impl LayerTensors {
    /// Reads one layer's capture back from the device.
    pub fn from_trace(layer: &crate::trace::LayerTrace) -> Result<Self> {
        let host = |t: &burn::tensor::Tensor<3>| -> Result<HostTensor> {
            Ok(HostTensor::new(t.dims().to_vec(), to_vec(t.clone())?))
        };
        Ok(Self {
            attn: layer.attn.as_ref().map(host).transpose()?,
            q: host(&layer.q)?,
            k: host(&layer.k)?,
            key_bias: None,
        })
    }
}

impl Session {
    pub fn new(model: &Model, source: &str) -> Self {
        let c = &model.config;
        Self {
            meta: SessionMeta {
                format_version: FORMAT_VERSION,
                model: ModelInfo {
                    source: source.to_string(),
                    model_type: c.model_type.clone(),
                    layers: c.layers,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                    attention: model.layer_attention(),
                    causal: Vec::new(),
                },
                inputs: Vec::new(),
                view: serde_json::Value::Null,
                projections: BTreeMap::new(),
            },
            layers: Vec::new(),
            extras: BTreeMap::new(),
            dtype: StoreDtype::F32,
        }
    }

    /// Adds a text input and its trace (read back to the host).
    pub fn push_text(
        &mut self,
        model: &Model,
        text: &str,
        encoded: &Encoded,
        trace: &Trace,
    ) -> Result<()> {
        let tokenizer = model.tokenizer()?;
        let next_tokens = trace
            .top_next_tokens(5)
            .into_iter()
            .map(|(id, prob)| NextToken {
                id,
                token: tokenizer.display(id),
                prob,
            })
            .collect();
        self.meta.inputs.push(InputInfo {
            kind: InputKind::Text,
            text: Some(text.to_string()),
            image: None,
            tokens: encoded.tokens.clone(),
            token_ids: encoded.ids.clone(),
            patch_grid: None,
            prefix_tokens: None,
            patch_size: None,
            next_tokens,
            special_tokens: encoded
                .ids
                .iter()
                .enumerate()
                .filter(|(_, id)| tokenizer.is_special(**id))
                .map(|(i, _)| i)
                .collect(),
            probe: None,
            edits: Vec::new(),
            base: None,
            generated: None,
            target: None,
            model: None,
        });
        self.push_layers(trace)
    }

    /// Stores the trace's layers for the input just added: attention, q and k, each row's
    /// logsumexp as `lse/{input}/{layer}`, and the extreme-token figures (`vnorm`, `norms`,
    /// `massive`).
    fn push_layers(&mut self, trace: &Trace) -> Result<()> {
        let index = self.layers.len();
        for (l, layer) in trace.layers.iter().enumerate() {
            let lse = to_vec(layer.lse.clone())?;
            self.insert_f32(format!("lse/{index}/{l}"), layer.lse.dims().to_vec(), &lse);
            let vnorm = to_vec(layer.vnorm.clone())?;
            self.insert_f32(
                format!("vnorm/{index}/{l}"),
                layer.vnorm.dims().to_vec(),
                &vnorm,
            );
            if let Some(residual) = layer.residual.first() {
                self.insert_f32(
                    format!("norms/{index}/{l}"),
                    vec![residual.norms.len()],
                    &residual.norms,
                );
                let mut rows: Vec<f32> = residual.massive.iter().flatten().copied().collect();
                // Fewer activations than rows (a tiny input): the rest say "none".
                while rows.len() < MASSIVE_ROWS * 3 {
                    rows.extend([-1.0, -1.0, 0.0]);
                }
                self.insert_f32(format!("massive/{index}/{l}"), vec![MASSIVE_ROWS, 3], &rows);
            }
        }
        let layers = trace
            .layers
            .iter()
            .map(LayerTensors::from_trace)
            .collect::<Result<_>>()?;
        self.layers.push(layers);
        Ok(())
    }

    /// Adds an image input and its trace. The picture as the model saw it (resized and
    /// cropped) is stored as `image/{input}`, u8 [height, width, 3], so the session opens
    /// without the original file.
    pub fn push_image(
        &mut self,
        model: &Model,
        name: &str,
        prepared: &PreparedImage,
        trace: &Trace,
    ) -> Result<()> {
        let view = &prepared.view;
        let Some(([rows, cols], prefix)) = model.patch_layout(view.height, view.width) else {
            return Err(EngineError::BadInput {
                index: self.meta.inputs.len(),
                reason: format!("{} is not an image model", model.source.display()),
            });
        };
        let vision = model.config.vision.as_ref();
        let mut tokens = Vec::new();
        if vision.is_none_or(|v| v.class_token) {
            tokens.push("[CLS]".to_string());
        }
        if vision.is_some_and(|v| v.distillation_token) {
            tokens.push("[DIST]".into());
        }
        for r in 0..vision.map_or(0, |v| v.register_tokens) {
            tokens.push(format!("[REG{r}]"));
        }
        for r in 0..rows {
            for c in 0..cols {
                tokens.push(format!("({r},{c})"));
            }
        }
        let labels = vision.map(|v| v.labels.as_slice()).unwrap_or_default();
        let next_tokens = trace
            .top_next_tokens(5)
            .into_iter()
            .map(|(id, prob)| NextToken {
                id,
                token: labels
                    .get(id as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("class {id}")),
                prob,
            })
            .collect();
        let index = self.meta.inputs.len();
        self.meta.inputs.push(InputInfo {
            kind: InputKind::Image,
            text: None,
            image: Some(name.to_string()),
            token_ids: (0..tokens.len() as u32).collect(),
            tokens,
            patch_grid: Some([rows, cols]),
            prefix_tokens: Some(prefix),
            patch_size: vision.map(|v| v.patch_size),
            next_tokens,
            special_tokens: (0..prefix).collect(),
            probe: None,
            edits: Vec::new(),
            base: None,
            generated: None,
            target: None,
            model: None,
        });
        self.extras.insert(
            format!("image/{index}"),
            ExtraTensor {
                dtype: Dtype::U8,
                shape: vec![view.height, view.width, 3],
                bytes: view.pixels.clone(),
            },
        );
        self.push_layers(trace)
    }

    /// Each query row's logsumexp of layer `layer`'s logits for input `index`, [heads, T]
    /// row-major (`lse/{input}/{layer}`); None in format 1 files.
    pub fn lse(&self, index: usize, layer: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("lse/{index}/{layer}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// Layer `layer` of input `index` as q, k and lse, from which any part of its attention is
    /// computed (rows, regions, metrics) without materialising it; None when the file holds no
    /// lse (format 1) or q and k were not captured.
    pub fn qk_parts(&self, index: usize, layer: usize) -> Option<QkParts<'_>> {
        let tensors = self.layers.get(index)?.get(layer)?;
        let lse = self.lse(index, layer)?;
        let attention = self.layer_attention(layer);
        QkAttention::new(&tensors.q, &tensors.k, &lse, attention, false)?;
        let causal = self.causal(
            layer,
            &tensors.q,
            &tensors.k,
            &lse,
            tensors.key_bias.as_ref(),
        );
        Some(QkParts {
            q: &tensors.q,
            k: &tensors.k,
            key_bias: tensors.key_bias.as_ref(),
            lse,
            attention,
            causal,
        })
    }

    /// Whether layer `layer` masks later keys: as the file says, else read off its lse.
    fn causal(
        &self,
        layer: usize,
        q: &HostTensor,
        k: &HostTensor,
        lse: &[f32],
        key_bias: Option<&HostTensor>,
    ) -> bool {
        let stated = self.meta.model.causal.get(layer).copied().flatten();
        stated.unwrap_or_else(|| {
            let bias = key_bias.map(|b| &b.data[..]);
            looks_causal(q, k, lse, &self.layer_attention(layer), bias)
        })
    }

    /// How layer `layer`'s logits follow from its q and k. Format 1 files do not say: there it
    /// is 1/sqrt(head_dim) without soft-cap or window (and `rope` reads false, meaning unknown).
    pub fn layer_attention(&self, layer: usize) -> LayerAttention {
        self.meta
            .model
            .attention
            .get(layer)
            .copied()
            .unwrap_or_else(|| LayerAttention::standard(self.meta.model.head_dim, false))
    }

    /// Stores a retrieval probe's per-head scores for input `index` as `retrieval/{input}`
    /// [layers, heads] (`scores[layer][head]`), for readers without the metrics code.
    pub fn set_retrieval_scores(&mut self, index: usize, scores: &[Vec<f32>]) {
        let heads = scores.first().map_or(0, Vec::len);
        let values: Vec<f32> = scores.iter().flatten().copied().collect();
        self.insert_f32(
            format!("retrieval/{index}"),
            vec![scores.len(), heads],
            &values,
        );
    }

    /// Stores input `index`'s whole next-token distribution as `next/{input}` [vocab] (edited
    /// runs and their bases, so a comparison reopens with its KL divergence).
    pub fn set_next_token_probs(&mut self, index: usize, probs: &[f32]) {
        self.insert_f32(format!("next/{index}"), vec![probs.len()], probs);
    }

    /// Input `index`'s whole next-token distribution, where the file keeps it.
    pub fn next_token_probs(&self, index: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("next/{index}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// Replaces the logsumexp of layer `layer`'s rows for input `index` (a derived session).
    pub fn set_lse(&mut self, index: usize, layer: usize, lse: &[f32]) {
        let shape = vec![
            self.meta.model.heads,
            lse.len() / self.meta.model.heads.max(1),
        ];
        self.insert_f32(format!("lse/{index}/{layer}"), shape, lse);
    }

    fn insert_f32(&mut self, name: String, shape: Vec<usize>, values: &[f32]) {
        self.extras.insert(
            name,
            ExtraTensor {
                dtype: Dtype::F32,
                shape,
                bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        );
    }

    /// The L2 norm of each value vector of layer `layer` for input `index`, [kv_heads, T]
    /// row-major (`vnorm/{input}/{layer}`); None in files made before it was captured.
    pub fn value_norms(&self, index: usize, layer: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("vnorm/{index}/{layer}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// The residual stream's largest activations after layer `layer` as (token, channel,
    /// value), largest first (`massive/{input}/{layer}`, padding rows dropped).
    pub fn massive_activations(&self, index: usize, layer: usize) -> Option<Vec<[f32; 3]>> {
        let extra = self.extras.get(&format!("massive/{index}/{layer}"))?;
        let values = decode_floats(extra.dtype, &extra.bytes).ok()?;
        Some(
            values
                .chunks_exact(3)
                .map(|r| [r[0], r[1], r[2]])
                .filter(|r| r[0] >= 0.0)
                .collect(),
        )
    }

    /// Each token's hidden-state norm after layer `layer` (`norms/{input}/{layer}`).
    pub fn token_norms(&self, index: usize, layer: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("norms/{index}/{layer}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// Stores a gradient run's figures for input `index` (DESIGN.md, "Gradients"):
    /// `grad_attn/{input}/{layer}` [heads, T, T], `importance/{input}` [layers, heads],
    /// `relevance/{input}` [T], and the target in the input's metadata.
    pub fn set_gradients(&mut self, index: usize, figures: &GradientFigures) {
        let (heads, t) = (figures.heads, figures.tokens);
        for (l, grad) in figures.grad_attn.iter().enumerate() {
            self.insert_f32(format!("grad_attn/{index}/{l}"), vec![heads, t, t], grad);
        }
        self.insert_f32(
            format!("importance/{index}"),
            vec![figures.layers, heads],
            &figures.importance,
        );
        self.insert_f32(format!("relevance/{index}"), vec![t], &figures.relevance);
        if let Some(info) = self.meta.inputs.get_mut(index) {
            info.target = Some(figures.target);
        }
    }

    /// Each head's importance |∂target/∂ξ_h| for input `index`, [layers × heads] row-major;
    /// None without gradients.
    pub fn importance(&self, index: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("importance/{index}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// Whether input `index` keeps ∂target/∂A ⊙ A (a gradient run over a long input keeps only
    /// importance and relevance).
    pub fn has_gradient_attention(&self, index: usize) -> bool {
        self.extras.contains_key(&format!("grad_attn/{index}/0"))
    }

    /// ∂target/∂A ⊙ A of one layer for input `index`, [heads × T × T] row-major.
    pub fn gradient_attention(&self, index: usize, layer: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("grad_attn/{index}/{layer}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// Each token's relevance to the target for input `index` (Chefer et al.), [T].
    pub fn relevance(&self, index: usize) -> Option<Vec<f32>> {
        let extra = self.extras.get(&format!("relevance/{index}"))?;
        decode_floats(extra.dtype, &extra.bytes).ok()
    }

    /// The [width, height] of image input `index`'s picture, without copying it.
    pub fn image_size(&self, index: usize) -> Option<[usize; 2]> {
        let extra = self.extras.get(&format!("image/{index}"))?;
        match extra.shape[..] {
            [height, width, 3] if extra.dtype == Dtype::U8 => Some([width, height]),
            _ => None,
        }
    }

    /// The picture of image input `index`, as the model saw it.
    pub fn image(&self, index: usize) -> Option<RgbImage> {
        let [width, height] = self.image_size(index)?;
        let bytes = self.extras.get(&format!("image/{index}"))?.bytes.clone();
        Some(RgbImage::new(width, height, bytes))
    }

    /// How many tokens the inputs hold together: N, the number of queries (and of keys) in
    /// every head's joint query-key embedding.
    pub fn corpus_tokens(&self) -> usize {
        self.meta.inputs.iter().map(|i| i.tokens.len()).sum()
    }

    /// Whether every layer holds its queries and keys (a session captured from Python for a
    /// model whose attention modules it does not know holds attention only).
    pub fn has_queries_and_keys(&self) -> bool {
        self.layers
            .iter()
            .flatten()
            .all(|l| l.q.shape.last().is_some_and(|&d| d > 0))
    }

    /// Input and token of the i-th of the N corpus tokens (input order, then token order).
    pub fn corpus_token(&self, mut i: usize) -> Option<(usize, usize)> {
        for (input, info) in self.meta.inputs.iter().enumerate() {
            if i < info.tokens.len() {
                return Some((input, i));
            }
            i -= info.tokens.len();
        }
        None
    }

    /// Stores one head's projection as `proj/{method}/{layer}/{head}`, f32 [2N, dims].
    pub fn set_projection(
        &mut self,
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
        points: &[f32],
    ) {
        self.extras.insert(
            format!("proj/{}/{layer}/{head}", method.name()),
            ExtraTensor {
                dtype: Dtype::F32,
                shape: vec![points.len() / dims.max(1), dims],
                bytes: points.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        );
    }

    /// Records the settings of a method's projections. Projections of another dimension made
    /// earlier with the same method are dropped, so the method's tensors always agree.
    pub fn note_projection(&mut self, method: Method, dims: usize, seed: u64) {
        let prefix = format!("proj/{}/", method.name());
        self.extras
            .retain(|name, t| !name.starts_with(&prefix) || t.shape.get(1) == Some(&dims));
        self.meta
            .projections
            .insert(method.name().to_string(), ProjectionInfo { dims, seed });
    }

    /// A stored projection: (dims, [2N, dims] row-major).
    pub fn projection(
        &self,
        method: Method,
        layer: usize,
        head: usize,
    ) -> Option<(usize, Vec<f32>)> {
        let extra = self
            .extras
            .get(&format!("proj/{}/{layer}/{head}", method.name()))?;
        let [rows, dims] = extra.shape[..] else {
            return None;
        };
        if rows != 2 * self.corpus_tokens() {
            return None;
        }
        decode_floats(extra.dtype, &extra.bytes)
            .ok()
            .map(|points| (dims, points))
    }

    /// Writes the session atomically (see [`write_atomically`]).
    pub fn save(&self, path: &Path, dtype: StoreDtype) -> Result<()> {
        let encode = |t: &HostTensor| -> (Dtype, Vec<u8>) {
            match dtype {
                StoreDtype::F32 => (
                    Dtype::F32,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                StoreDtype::F16 => (
                    Dtype::F16,
                    t.data
                        .iter()
                        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                        .collect(),
                ),
            }
        };
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, layers) in self.layers.iter().enumerate() {
            for (l, layer) in layers.iter().enumerate() {
                let tensors = [
                    ("attn", layer.attn.as_ref()),
                    ("q", Some(&layer.q)),
                    ("k", Some(&layer.k)),
                ];
                for (prefix, t) in tensors {
                    let Some(t) = t else {
                        continue; // attention kept as q, k and lse only
                    };
                    if t.data.is_empty() {
                        continue; // q and k of attention captured without them
                    }
                    let (dt, bytes) = encode(t);
                    owned.push((format!("{prefix}/{i}/{l}"), dt, t.shape.clone(), bytes));
                }
            }
        }
        for (name, extra) in &self.extras {
            owned.push((
                name.clone(),
                extra.dtype,
                extra.shape.clone(),
                extra.bytes.clone(),
            ));
        }
        let bad = |reason: String| EngineError::BadSession {
            path: path.to_path_buf(),
            reason,
        };
        let views = owned
            .iter()
            .map(|(name, dt, shape, bytes)| {
                TensorView::new(*dt, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| bad(format!("tensor {name}: {e:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta_json = serde_json::to_string(&self.meta).map_err(|e| bad(e.to_string()))?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), meta_json)]);
        write_atomically(
            path,
            |tmp| {
                safetensors::serialize_to_file(views, Some(metadata), tmp)
                    .map_err(|e| bad(format!("writing: {e:?}")))
            },
            |e| EngineError::io(path, e),
        )
    }

    /// Reads and validates a session file. A newer format, a truncated or corrupt file, or a
    /// tensor whose shape disagrees with the metadata is an error naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        if len == 0 {
            return Self::from_bytes(&[], path);
        }
        // Files up to COPY_ON_OPEN_BYTES are copied into anonymous memory and read from there:
        // a session that lives in memory cannot change under the views when another program
        // rewrites or truncates the file in place (reading a mapped page past a truncated end
        // raises SIGBUS, which no error handling can catch). The tensors are still read in
        // place from that copy, and copying costs a fraction of a second.
        let map = if len <= COPY_ON_OPEN_BYTES {
            let io = |e| EngineError::io(path, e);
            let mut copy = memmap2::MmapMut::map_anon(len as usize).map_err(io)?;
            let mut reader = &file;
            std::io::Read::read_exact(&mut reader, &mut copy).map_err(io)?;
            copy.make_read_only().map_err(io)?
        } else {
            // Larger files are mapped: the tensors are read straight from the page cache, with
            // no second copy in memory. SAFETY: the map is read-only, and sessions are replaced
            // by renaming a new file over the old one (headwise and its Python package both
            // do), never rewritten in place, so the mapped inode keeps its bytes. A program
            // that truncates a large open session in place is not guarded against (README,
            // "The session file").
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?
        };
        // The f32 tensors are then read in place from the map: opening copies nothing more.
        let map = Arc::new(map);
        Self::parse(&map, Some(&map), path)
    }

    /// A session from a file's bytes, decoded into owned tensors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::parse(bytes, None, path)
    }

    /// `map`, when given, holds `bytes`: f32 tensors are then read in place instead of decoded.
    fn parse(bytes: &[u8], map: Option<&Arc<memmap2::Mmap>>, path: &Path) -> Result<Self> {
        let bad = |reason: String| EngineError::BadSession {
            path: path.to_path_buf(),
            reason,
        };
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
                bad(format!(
                    "not a safetensors file, or truncated or corrupt ({e:?})"
                ))
            })?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| {
                bad(format!(
                    "no '{METADATA_KEY}' metadata: not a headwise session"
                ))
            })?;
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("metadata is not JSON: {e}")))?;
        let format_version = version["format_version"]
            .as_u64()
            .ok_or_else(|| bad("metadata has no format_version".into()))?;
        if format_version > FORMAT_VERSION as u64 {
            return Err(bad(format!(
                "written by a newer headwise (format {format_version}; this one reads up to {FORMAT_VERSION})"
            )));
        }
        let mut meta: SessionMeta =
            serde_json::from_str(json).map_err(|e| bad(format!("metadata: {e}")))?;
        let stated: Vec<Option<bool>> = (0..meta.model.attention.len())
            .map(|l| version["model"]["attention"][l]["causal"].as_bool())
            .collect();
        // Empty when no layer says, as a session made in memory has it.
        if stated.iter().any(Option::is_some) {
            meta.model.causal = stated;
        }
        if !meta.model.attention.is_empty() && meta.model.attention.len() != meta.model.layers {
            return Err(bad(format!(
                "model.attention has {} entries for {} layers",
                meta.model.attention.len(),
                meta.model.layers
            )));
        }
        check_model_sizes(&meta.model, metadata.tensors().len(), meta.inputs.len()).map_err(bad)?;
        let data_start = 8 + header_len;
        let data = &bytes[data_start..];
        // The dtype, shape, bytes and the bytes' offset in the file.
        let read = |name: &str| -> Result<(Dtype, Vec<usize>, &[u8], usize)> {
            let info = metadata
                .info(name)
                .ok_or_else(|| bad(format!("missing tensor {name}")))?;
            Ok((
                info.dtype,
                info.shape.clone(),
                &data[info.data_offsets.0..info.data_offsets.1],
                data_start + info.data_offsets.0,
            ))
        };
        let m = &meta.model;
        let mut layers = Vec::with_capacity(meta.inputs.len());
        for (i, input) in meta.inputs.iter().enumerate() {
            let t = input.token_ids.len();
            if input.tokens.len() != t {
                return Err(bad(format!(
                    "input {i}: {} tokens but {t} token ids",
                    input.tokens.len()
                )));
            }
            if input.kind == InputKind::Image {
                let (Some([rows, cols]), Some(prefix)) = (input.patch_grid, input.prefix_tokens)
                else {
                    return Err(bad(format!(
                        "input {i} is an image without patch_grid and prefix_tokens"
                    )));
                };
                // Checked arithmetic: a grid of 2^32 × 2^32 wraps to 0 in 64 bits.
                if rows == 0 || cols == 0 {
                    return Err(bad(format!(
                        "input {i}: patch_grid [{rows}, {cols}] holds no patches"
                    )));
                }
                if rows.checked_mul(cols).and_then(|n| n.checked_add(prefix)) != Some(t) {
                    return Err(bad(format!(
                        "input {i}: a {rows}×{cols} patch_grid and {prefix} prefix tokens \
                         do not make its {t} tokens"
                    )));
                }
                match metadata.info(&format!("image/{i}")) {
                    Some(info) if info.dtype == Dtype::U8 && info.shape.len() == 3 => {
                        check_picture(input, &info.shape)
                            .map_err(|e| bad(format!("image/{i}: {e}")))?;
                    }
                    Some(info) => {
                        return Err(bad(format!(
                            "image/{i} is {:?} {:?}, expected u8 [height, width, 3]",
                            info.dtype, info.shape
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "input {i} is an image but image/{i} is missing"
                        )));
                    }
                }
            }
            if let Err(e) = crate::edits::parse_all(&input.edits) {
                return Err(bad(format!("input {i}: {e}")));
            }
            if let Some(base) = input.base
                && base >= meta.inputs.len()
            {
                return Err(bad(format!(
                    "input {i}: base {base} is past the file's {} inputs",
                    meta.inputs.len()
                )));
            }
            if input.generated.is_some_and(|g| g > t) {
                return Err(bad(format!(
                    "input {i}: {} generated tokens of {t}",
                    input.generated.unwrap_or(0)
                )));
            }
            // An optional f32 extra, when present, must have the shape the metadata implies.
            let check_extra = |name: &str, expected: &[usize]| match metadata.info(name) {
                Some(info) if info.shape != expected || info.dtype != Dtype::F32 => {
                    Err(bad(format!(
                        "tensor {name} has shape {:?} ({:?}), the metadata says {expected:?} \
                         (F32)",
                        info.shape, info.dtype
                    )))
                }
                _ => Ok(()),
            };
            check_extra(&format!("importance/{i}"), &[m.layers, m.heads])?;
            check_extra(&format!("relevance/{i}"), &[t])?;
            let mut per_layer = Vec::with_capacity(m.layers);
            for l in 0..m.layers {
                // What a `scale` edit added to this layer's logits: q, k and lse alone do not
                // give the edited attention without it.
                let edit_bias = input.edit_bias(l, m.heads);
                let get = |prefix: &str, expected: [usize; 3]| -> Result<HostTensor> {
                    let name = format!("{prefix}/{i}/{l}");
                    let (dtype, shape, raw, offset) = read(&name)?;
                    if shape != expected {
                        return Err(bad(format!(
                            "tensor {name} has shape {shape:?}, the metadata says {expected:?}"
                        )));
                    }
                    let count = expected.iter().product::<usize>();
                    let in_place = map
                        .filter(|_| dtype == Dtype::F32 && raw.len() == count * 4)
                        .and_then(|map| Floats::mapped(map.clone(), offset, count));
                    if let Some(data) = in_place {
                        return Ok(HostTensor { shape, data });
                    }
                    let values = decode_floats(dtype, raw)
                        .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                    Ok(HostTensor::new(shape, values))
                };
                for (prefix, expected) in [
                    ("lse", vec![m.heads, t]),
                    ("norms", vec![t]),
                    ("vnorm", vec![m.kv_heads, t]),
                    ("massive", vec![MASSIVE_ROWS, 3]),
                    ("grad_attn", vec![m.heads, t, t]),
                ] {
                    check_extra(&format!("{prefix}/{i}/{l}"), &expected)?;
                }
                let stored = |prefix: &str| metadata.info(&format!("{prefix}/{i}/{l}")).is_some();
                let (q, k) = if stored("attn") && !stored("q") && !stored("k") {
                    // Attention captured without its queries and keys (DESIGN: format 2):
                    // zero-width q and k, so the query-key view has nothing to lay out.
                    (
                        HostTensor::new(vec![m.heads, t, 0], Vec::new()),
                        HostTensor::new(vec![m.kv_heads, t, 0], Vec::new()),
                    )
                } else {
                    (
                        get("q", [m.heads, t, m.head_dim])?,
                        get("k", [m.kv_heads, t, m.head_dim])?,
                    )
                };
                let attn = if stored("attn") {
                    Some(get("attn", [m.heads, t, t])?)
                } else {
                    let raw_layer = &version["model"]["attention"][l];
                    if raw_layer["rebuild"] == false || meta.model.attention.is_empty() {
                        return Err(bad(format!(
                            "input {i}, layer {l}: no attention stored, and the file does not \
                             say how to rebuild it from q, k and lse"
                        )));
                    }
                    if metadata.info(&format!("lse/{i}/{l}")).is_none() {
                        return Err(bad(format!(
                            "input {i}, layer {l}: neither attn/{i}/{l} nor lse/{i}/{l} is stored"
                        )));
                    }
                    // Small inputs' attention is rebuilt once here; long ones' stays q, k and
                    // lse, read a row or a region at a time (memory O(T·d), not O(T²)).
                    let bytes = attention_bytes(m.layers, m.heads, t);
                    if bytes <= AttentionCapture::DEFAULT_BUDGET {
                        let (dtype, _, raw, _) = read(&format!("lse/{i}/{l}"))?;
                        let lse = decode_floats(dtype, raw)
                            .map_err(|e| bad(format!("lse/{i}/{l}: {e}")))?;
                        let layer = meta.model.attention[l];
                        let bias = edit_bias.as_deref();
                        let causal = meta
                            .model
                            .causal
                            .get(l)
                            .copied()
                            .flatten()
                            .unwrap_or_else(|| looks_causal(&q, &k, &lse, &layer, bias));
                        Some(rebuild_attention(&q, &k, &lse, &layer, causal, bias))
                    } else {
                        None
                    }
                };
                per_layer.push(LayerTensors {
                    attn,
                    q,
                    k,
                    key_bias: edit_bias.map(|b| HostTensor::new(vec![m.heads, t], b)),
                });
            }
            layers.push(per_layer);
        }
        check_grouping(&meta.model).map_err(bad)?;
        let mut extras = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            let known = ["attn/", "q/", "k/"].iter().any(|p| name.starts_with(p));
            if !known {
                extras.insert(
                    name.clone(),
                    ExtraTensor {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        bytes: data[info.data_offsets.0..info.data_offsets.1].to_vec(),
                    },
                );
            }
        }
        let stored_dtype = metadata.info("attn/0/0").or_else(|| metadata.info("q/0/0"));
        let dtype = match stored_dtype.map(|i| i.dtype) {
            Some(Dtype::F16) => StoreDtype::F16,
            _ => StoreDtype::F32,
        };
        Ok(Self {
            meta,
            layers,
            extras,
            dtype,
        })
    }
}

/// The largest head count, head width and layer count a session may claim: past any model, and
/// small enough that nothing sized from them overflows. The tensors are checked against them
/// afterwards.
const MAX_SESSION_LAYERS: usize = 1 << 12;
const MAX_SESSION_HEADS: usize = 1 << 12;
const MAX_SESSION_HEAD_DIM: usize = 1 << 14;

/// The model's sizes in a session's metadata, before anything is allocated from them: within
/// bounds, and no more layers than the file has tensors for.
fn check_model_sizes(
    m: &ModelInfo,
    tensors: usize,
    inputs: usize,
) -> std::result::Result<(), String> {
    for (key, value, limit) in [
        ("model.layers", m.layers, MAX_SESSION_LAYERS),
        ("model.heads", m.heads, MAX_SESSION_HEADS),
        ("model.kv_heads", m.kv_heads, MAX_SESSION_HEADS),
        ("model.head_dim", m.head_dim, MAX_SESSION_HEAD_DIM),
    ] {
        if value > limit {
            return Err(format!(
                "{key} = {value} is larger than any model (at most {limit})"
            ));
        }
    }
    // Every layer of every input stores at least one tensor (its attention or its q).
    if inputs > 0 && m.layers > tensors / inputs {
        return Err(format!(
            "model.layers = {} for {inputs} inputs, but the file holds only {tensors} tensors",
            m.layers
        ));
    }
    Ok(())
}

/// Query heads share key heads in groups (query head h uses key head h / (heads / kv_heads)):
/// checked after the tensors, whose shapes name a disagreement more precisely.
fn check_grouping(m: &ModelInfo) -> std::result::Result<(), String> {
    if m.heads == 0 || m.kv_heads == 0 || !m.heads.is_multiple_of(m.kv_heads) {
        return Err(format!(
            "model.heads = {} cannot be grouped over model.kv_heads = {}",
            m.heads, m.kv_heads
        ));
    }
    Ok(())
}

/// An image input's picture, u8 [height, width, channels] as stored: three channels, not empty,
/// and covering the patch grid (each patch `patch_size` pixels), all in checked arithmetic.
fn check_picture(input: &InputInfo, shape: &[usize]) -> std::result::Result<(), String> {
    let [height, width, channels] = shape[..] else {
        return Err(format!("shape {shape:?}, expected [height, width, 3]"));
    };
    if channels != 3 {
        return Err(format!(
            "{channels} channels, expected 3 (u8 [height, width, 3], RGB)"
        ));
    }
    if height == 0 || width == 0 {
        return Err(format!("an empty picture ({width} × {height})"));
    }
    if let (Some([rows, cols]), Some([ph, pw])) = (input.patch_grid, input.patch_size) {
        let covered = rows.checked_mul(ph).zip(cols.checked_mul(pw));
        if ph == 0 || pw == 0 || covered.is_none_or(|(h, w)| h > height || w > width) {
            return Err(format!(
                "a {rows}×{cols} patch_grid of {ph}×{pw}-pixel patches does not fit in the \
                 {width} × {height} picture"
            ));
        }
    }
    Ok(())
}
