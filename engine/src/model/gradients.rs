//! Gradients of one target with respect to attention (DESIGN.md, "Gradients"): each head's
//! importance |∂target/∂ξ_h| (Michel et al.), ∂target/∂A ⊙ A for every layer and head, and the
//! relevance of each token to the target (Chefer et al.'s rule,
//! [`crate::analysis::relevance`]), from one pass and one backward pass through burn's autodiff.
//!
//! The target is, by what the model has:
//! - decoders: the log-probability of a token at the last position (`token`);
//! - image classifiers: the log-probability of a class (`class`);
//! - encoders and vision backbones without a head: the dot product of the first token's final
//!   hidden state (the pooled output: BERT's `[CLS]`, a ViT's CLS after its final norm) with the
//!   input embedding (the first layer's input, a constant) of the token at position `id`
//!   (`embedding`), as BertViz-style tools use for models without an output layer.
//!
//! Two ways, one result: a short input runs one pass and one backward pass through every layer
//! (its graph holds every layer's attention: layers · heads · T²). Past
//! [`GRADIENT_BUDGET_BYTES`] of that, a checkpoint pass keeps only each layer's input stream
//! (T · hidden per layer), then each layer is run again on its own from the top down and
//! differentiated against the gradient arriving from the layer above, so only one layer's
//! attention is in memory at a time; ∂target/∂A ⊙ A is then kept only while every layer's fits
//! [`GRADIENT_KEEP_BYTES`] (importance and relevance always are).

use super::gradient_tape::GradientTape;
use super::packing::{LayerSpan, Packing};
use super::{Model, Network, PixelInput, TokenInput, to_vec};
use crate::analysis::relevance::{RelevanceRow, chefer_relevance};
use crate::edits::Edit;
use crate::error::{EngineError, Result};
use crate::trace::AttentionCapture;
use crate::trace::Trace;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// What the target of a gradient run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// log p(token) at the last position (decoders).
    Token,
    /// log p(class) (image classifiers).
    Class,
    /// pooled output · the input embedding of the token at position `id` (no output layer).
    Embedding,
}

/// Which target a run asks for: the model's most likely one, or one by its number (a token id,
/// a class index, or a token position for `embedding` targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetChoice {
    #[default]
    Top,
    Id(usize),
}

/// The target a gradient run differentiated, as sessions store it (`inputs[i].target`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub id: usize,
    /// The target's value in the run (a log-probability, or the dot product).
    #[serde(default)]
    pub value: f32,
    /// The token whose row of the relevance map is kept: the last for `token` targets, the
    /// first (the pooled token) otherwise.
    #[serde(default)]
    pub row: usize,
}

/// What a gradient run gives for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientFigures {
    pub target: Target,
    pub layers: usize,
    pub heads: usize,
    pub tokens: usize,
    /// |∂target/∂ξ_h| per layer and head, [layers × heads] row-major.
    pub importance: Vec<f32>,
    /// Per layer, ∂target/∂A ⊙ A as [heads × T × T] row-major.
    pub grad_attn: Vec<Vec<f32>>,
    /// Each token's relevance to the target, [T] (Chefer et al.).
    pub relevance: Vec<f32>,
}

/// The most a gradient run may hold of attention, products and their gradients:
/// 4 GiB, counted as eight f32 copies of every layer's [heads, T, T] attention.
pub const GRADIENT_BUDGET_BYTES: u64 = 4 << 30;

/// The bytes [`GRADIENT_BUDGET_BYTES`] counts for a run of `tokens` tokens.
pub fn gradient_bytes(layers: usize, heads: usize, tokens: usize) -> u64 {
    8 * 4 * (layers * heads) as u64 * (tokens as u64).pow(2)
}

/// The most ∂target/∂A ⊙ A a layer-by-layer run keeps for the session (every layer's, f32):
/// 256 MiB, as `--attention auto` keeps attention.
pub const GRADIENT_KEEP_BYTES: u64 = 256 << 20;

/// How a gradient run holds the model's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GradientPass {
    /// Whole while it fits [`GRADIENT_BUDGET_BYTES`], else layer by layer.
    #[default]
    Auto,
    /// One graph through every layer.
    Whole,
    /// A checkpoint pass, then one layer at a time from the top.
    LayerByLayer,
}

impl Model {
    /// Which kind of target this model's gradient runs differentiate; an error naming the
    /// model where there is none.
    pub fn target_kind(&self) -> Result<TargetKind> {
        match &self.network {
            Network::Llama(_) | Network::Gemma(_) | Network::Gpt2(_) => Ok(TargetKind::Token),
            Network::Bert(_) | Network::ModernBert(_) => Ok(TargetKind::Embedding),
            Network::Vit(vit) if vit.has_classifier() => Ok(TargetKind::Class),
            Network::Vit(_) => Ok(TargetKind::Embedding),
            Network::VisionTower(_) => Err(EngineError::Compute(format!(
                "gradients are not available for {} ({}): a vision tower has no class head or \
                 pooled token headwise differentiates yet",
                self.source.display(),
                self.config.model_type
            ))),
        }
    }

    /// The target `spec` names (`--target`): a number (token id, class index or token
    /// position), a text that is one token (decoders), or a class label (classifiers).
    pub fn target_choice(&self, spec: &str) -> Result<TargetChoice> {
        if let Ok(id) = spec.trim().parse::<usize>() {
            return Ok(TargetChoice::Id(id));
        }
        let bad = |reason: String| EngineError::BadInput { index: 0, reason };
        match self.target_kind()? {
            TargetKind::Token => self
                .tokenizer()?
                .single_token_id(spec)
                .map(|id| TargetChoice::Id(id as usize))
                .ok_or_else(|| {
                    bad(format!(
                        "target {spec:?} is not one token of this model's vocabulary (give its \
                         id, or a text that is exactly one token, e.g. \" Paris\")"
                    ))
                }),
            TargetKind::Class => self
                .config
                .vision
                .as_ref()
                .and_then(|v| v.labels.iter().position(|l| l == spec))
                .map(TargetChoice::Id)
                .ok_or_else(|| bad(format!("target {spec:?} is not one of the model's classes"))),
            TargetKind::Embedding => Err(bad(format!(
                "target {spec:?}: this model has no output layer, so its target is the pooled \
                 output's dot product with a token's embedding: give the token's position"
            ))),
        }
    }

    /// An error when even one layer's share of a gradient run would not fit the budget.
    fn check_gradient_size(&self, tokens: usize, layers: usize) -> Result<()> {
        let heads = self.config.heads;
        let bytes = gradient_bytes(layers, heads, tokens);
        if bytes > GRADIENT_BUDGET_BYTES {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "gradients keep {} attention and its gradient: {tokens} tokens × {heads} \
                     heads need about {:.1} GiB, more than the {:.0} GiB allowed; use a shorter \
                     input",
                    if layers == 1 {
                        "one layer's"
                    } else {
                        "every layer's"
                    },
                    bytes as f64 / f64::from(1u32 << 30),
                    GRADIENT_BUDGET_BYTES as f64 / f64::from(1u32 << 30)
                ),
            });
        }
        Ok(())
    }

    /// One text input's trace and gradients with respect to `choice`, with `edits` on the pass.
    pub fn text_gradients(
        &self,
        input: &TokenInput,
        edits: &[Edit],
        choice: TargetChoice,
    ) -> Result<(Trace, GradientFigures)> {
        self.text_gradients_with(input, edits, choice, GradientPass::Auto)
    }

    /// As [`Model::text_gradients`], holding the graph as `pass` says.
    pub fn text_gradients_with(
        &self,
        input: &TokenInput,
        edits: &[Edit],
        choice: TargetChoice,
        pass: GradientPass,
    ) -> Result<(Trace, GradientFigures)> {
        let kind = self.target_kind()?;
        self.check(0, input)?;
        let t = input.ids.len();
        let (layers, heads) = (self.config.layers, self.config.heads);
        for edit in edits {
            edit.check(layers, heads, t)?;
        }
        let whole = match pass {
            GradientPass::Auto => gradient_bytes(layers, heads, t) <= GRADIENT_BUDGET_BYTES,
            GradientPass::Whole => true,
            GradientPass::LayerByLayer => false,
        };
        if !whole {
            self.check_gradient_size(t, 1)?;
            return self.text_gradients_by_layer(input, edits, choice, kind);
        }
        self.check_gradient_size(t, layers)?;
        let tape = GradientTape::default();
        let packing = Packing {
            edits: edits.to_vec(),
            tape: Some(tape.clone()),
            ..Packing::single(t)
        };
        let trace = self.forward_packed(input, &packing)?.remove(0);
        let figures = self.differentiate(&tape, kind, choice, t)?;
        Ok((trace, figures))
    }

    /// A checkpoint pass, then each layer again from the top, differentiated against the
    /// gradient of the stream it hands on (see the module's documentation).
    fn text_gradients_by_layer(
        &self,
        input: &TokenInput,
        edits: &[Edit],
        choice: TargetChoice,
        kind: TargetKind,
    ) -> Result<(Trace, GradientFigures)> {
        let t = input.ids.len();
        let (layers, heads) = (self.config.layers, self.config.heads);
        let checkpoints = GradientTape::checkpoints();
        let packing = Packing {
            keep_attention: AttentionCapture::default().keeps(layers, heads, t),
            edits: edits.to_vec(),
            tape: Some(checkpoints.clone()),
            ..Packing::single(t)
        };
        let trace = self.forward_packed(input, &packing)?.remove(0);
        let streams = checkpoints.layer_inputs();
        let keep = 4 * (layers * heads) as u64 * (t as u64).pow(2) <= GRADIENT_KEEP_BYTES;
        let mut importance = vec![0.0f32; layers * heads];
        let mut grad_attn = vec![Vec::new(); if keep { layers } else { 0 }];
        let mut target: Option<Target> = None;
        let mut relevance: Option<RelevanceRow> = None;
        // ∂target/∂(the stream leaving the layer), from the layer above.
        let mut upstream: Option<Tensor<2>> = None;
        for layer in (0..layers).rev() {
            let stream = streams
                .get(layer)
                .cloned()
                .flatten()
                .ok_or_else(|| {
                    EngineError::Compute(format!(
                        "the checkpoint pass kept no input of layer {layer}"
                    ))
                })?
                .inner()
                .autodiff()
                .require_grad();
            let tape = GradientTape::default();
            let packing = Packing {
                edits: edits.to_vec(),
                tape: Some(tape.clone()),
                span: Some(LayerSpan {
                    start: layer,
                    end: layer + 1,
                    input: stream.clone(),
                }),
                ..Packing::single(t)
            };
            self.forward_packed(input, &packing)?;
            let objective = match &upstream {
                None => {
                    let (objective, chosen) = self.target_of(&tape, kind, choice, t)?;
                    relevance = Some(RelevanceRow::new(t, chosen.row));
                    target = Some(chosen);
                    objective
                }
                Some(gradient) => {
                    let output = tape.span_output().ok_or_else(|| {
                        EngineError::Compute(format!("layer {layer} handed on no stream"))
                    })?;
                    (output * gradient.clone()).sum()
                }
            };
            let gradients = objective.backward();
            let leaves = tape.leaves().into_iter().next().ok_or_else(|| {
                EngineError::Compute(format!("layer {layer} recorded no gradient leaves"))
            })?;
            let (grad, layer_importance) = leaf_gradients(&leaves, &gradients, heads, t)?;
            importance[layer * heads..(layer + 1) * heads].copy_from_slice(&layer_importance);
            if let Some(row) = relevance.as_mut() {
                row.add_layer(&grad, heads);
            }
            if keep {
                grad_attn[layer] = grad;
            }
            upstream = stream.grad(&gradients);
        }
        let (Some(target), Some(relevance)) = (target, relevance) else {
            return Err(EngineError::Compute("a model without layers".into()));
        };
        Ok((
            trace,
            GradientFigures {
                target,
                layers,
                heads,
                tokens: t,
                importance,
                grad_attn,
                relevance: relevance.finish(),
            },
        ))
    }

    /// One picture's trace and gradients with respect to `choice`.
    pub fn image_gradients(
        &self,
        input: &PixelInput,
        choice: TargetChoice,
    ) -> Result<(Trace, GradientFigures)> {
        let kind = self.target_kind()?;
        let Network::Vit(vit) = &self.network else {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} is a text model ({}): give it text, not an image",
                    self.source.display(),
                    self.config.model_type
                ),
            });
        };
        if let Some(([rows, cols], prefix)) = self.patch_layout(input.height, input.width) {
            self.check_gradient_size(rows * cols + prefix, self.config.layers)?;
        }
        let tape = GradientTape::default();
        let trace = vit.forward_taped(input, &self.device, Some(&tape))?;
        let t = trace.layers.first().map_or(0, |l| l.q.dims()[1]);
        let figures = self.differentiate(&tape, kind, choice, t)?;
        Ok((trace, figures))
    }

    /// The target from what the pass recorded, its backward pass, and the figures.
    fn differentiate(
        &self,
        tape: &GradientTape,
        kind: TargetKind,
        choice: TargetChoice,
        tokens: usize,
    ) -> Result<GradientFigures> {
        let (objective, target) = self.target_of(tape, kind, choice, tokens)?;
        let gradients = objective.backward();
        let leaves = tape.leaves();
        let heads = self.config.heads;
        let mut importance = Vec::with_capacity(leaves.len() * heads);
        let mut grad_attn = Vec::with_capacity(leaves.len());
        for leaves in &leaves {
            let (grad, layer_importance) = leaf_gradients(leaves, &gradients, heads, tokens)?;
            grad_attn.push(grad);
            importance.extend(layer_importance);
        }
        let relevance = chefer_relevance(&grad_attn, heads, tokens, target.row);
        Ok(GradientFigures {
            target,
            layers: leaves.len(),
            heads,
            tokens,
            importance,
            grad_attn,
            relevance,
        })
    }

    /// The target as a tracked scalar from what a pass recorded, with its description.
    fn target_of(
        &self,
        tape: &GradientTape,
        kind: TargetKind,
        choice: TargetChoice,
        tokens: usize,
    ) -> Result<(Tensor<1>, Target)> {
        let missing = |what: &str| {
            EngineError::Compute(format!(
                "the gradient pass recorded no {what} to differentiate"
            ))
        };
        let (scores, row) = match kind {
            TargetKind::Token | TargetKind::Class => {
                let logits = tape.logits().ok_or_else(|| missing("logits"))?;
                let row = if kind == TargetKind::Token {
                    tokens - 1
                } else {
                    0
                };
                (log_softmax(logits, 1), row)
            }
            TargetKind::Embedding => {
                let hidden = tape.hidden().ok_or_else(|| missing("hidden states"))?;
                let embedded = tape.embedded().ok_or_else(|| missing("input embeddings"))?;
                let pooled = hidden.slice(0..1);
                (pooled.matmul(embedded.detach().transpose()), 0)
            }
        };
        let [_, width] = scores.dims();
        let id = match choice {
            TargetChoice::Id(id) => id,
            TargetChoice::Top => {
                let values = to_vec(scores.clone().inner())?;
                // An embedding target never picks the pooled token itself.
                let skip = usize::from(kind == TargetKind::Embedding);
                top_index(&values, skip).ok_or_else(|| EngineError::BadInput {
                    index: 0,
                    reason: "a pooled-output target needs at least two tokens".into(),
                })?
            }
        };
        if id >= width {
            let what = match kind {
                TargetKind::Token => format!("token id {id} is outside the vocabulary of {width}"),
                TargetKind::Class => format!("class {id} is outside the model's {width} classes"),
                TargetKind::Embedding => {
                    format!("token position {id} is outside the input's {width} tokens")
                }
            };
            return Err(EngineError::BadInput {
                index: 0,
                reason: what,
            });
        }
        let objective: Tensor<1> = scores.slice([0..1, id..id + 1]).reshape([1]);
        let value = to_vec(objective.clone().inner())?[0];
        Ok((
            objective,
            Target {
                kind,
                id,
                value,
                row,
            },
        ))
    }
}

/// One layer's ∂target/∂A ⊙ A [heads × T × T] and head importances [heads] from its leaves
/// (M, ξ); a leaf the target does not depend on has no gradient: zeros.
fn leaf_gradients(
    (multiplier, gate): &(Tensor<3>, Tensor<3>),
    gradients: &burn::tensor::Gradients,
    heads: usize,
    tokens: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let grad = match multiplier.grad(gradients) {
        Some(g) => to_vec(g)?,
        None => vec![0.0; heads * tokens * tokens],
    };
    let importance = match gate.grad(gradients) {
        Some(g) => to_vec(g)?.into_iter().map(f32::abs).collect(),
        None => vec![0.0; heads],
    };
    Ok((grad, importance))
}

/// The index of the largest value from `skip` on (the first of equals); None when there is
/// none.
fn top_index(values: &[f32], skip: usize) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .skip(skip)
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_target_is_the_first_of_the_largest_after_the_skipped() {
        assert_eq!(top_index(&[9.0, 1.0, 3.0, 3.0], 1), Some(2));
        assert_eq!(top_index(&[9.0, 1.0, 3.0, 3.0], 0), Some(0));
        assert_eq!(top_index(&[9.0], 1), None);
    }

    #[test]
    fn the_budget_refuses_what_would_not_fit_and_passes_a_prompt() {
        // SmolLM2: 30 layers × 9 heads.
        assert!(gradient_bytes(30, 9, 128) < GRADIENT_BUDGET_BYTES);
        assert!(gradient_bytes(30, 9, 4096) > GRADIENT_BUDGET_BYTES);
    }
}
