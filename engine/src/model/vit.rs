//! The ViT family (ViT, DeiT, DINOv2 with or without registers): a pre-norm encoder over image
//! patches, with CLS (and distillation or register) tokens in front.

use super::config::{ModelConfig, VisionConfig};
use super::gradient_tape::GradientTape;
use super::key_mask::KeyMask;
use super::layers::{LayerNorm, Linear, attend, split_heads, upload};
use super::residual::residual_figures;
use super::weights::WeightSource;
use super::{PixelInput, bert::activate, to_vec};
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use crate::imaging::resample::{GridInterpolation, resize_grid};
use crate::trace::Trace;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

struct VitLayer {
    norm_before: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    /// DINOv2's LayerScale on the attention and MLP branches.
    scale_attn: Option<Tensor<1>>,
    norm_after: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    scale_mlp: Option<Tensor<1>>,
}

/// How a classification checkpoint turns the final hidden states into class logits.
enum Classifier {
    /// ViT, DeiT: a linear layer on the CLS token.
    Cls(Linear),
    /// DeiT with teacher: the mean of a CLS head and a distillation-token head.
    ClsAndDistillation(Box<(Linear, Linear)>),
    /// DINOv2: a linear layer on CLS concatenated with the mean of the patch tokens.
    ClsAndPatchMean(Linear),
}

pub struct Vit {
    config: ModelConfig,
    vision: VisionConfig,
    /// The patch convolution as a matrix: [channels·ph·pw, hidden].
    patch: Linear,
    cls: Tensor<2>,
    distillation: Option<Tensor<2>>,
    registers: Option<Tensor<2>>,
    /// [positions, hidden] on the host, for interpolating to other patch grids.
    positions: HostTensor,
    layers: Vec<VitLayer>,
    final_norm: LayerNorm,
    classifier: Option<Classifier>,
}

/// Where the encoder sits in the checkpoint: bare models have no prefix, task models put it under
/// the architecture's name.
fn prefix(w: &dyn WeightSource, model_type: &str) -> String {
    let name = if model_type.starts_with("dinov2") {
        model_type
            .strip_suffix("_with_registers")
            .unwrap_or(model_type)
    } else {
        model_type
    };
    [format!("{name}."), format!("{model_type}."), String::new()]
        .into_iter()
        .find(|p| w.contains(&format!("{p}embeddings.cls_token")))
        .unwrap_or_default()
}

/// Drops the leading batch dimension of a [1, n, hidden] parameter.
fn rows(t: HostTensor) -> HostTensor {
    let hidden = *t.shape.last().unwrap_or(&0);
    let n = t.data.len() / hidden.max(1);
    HostTensor::new(vec![n, hidden], t.data.into_vec())
}

impl Vit {
    pub fn load(
        config: &ModelConfig,
        w: &dyn WeightSource,
        device: &Device,
        progress: &dyn Fn(f32),
    ) -> Result<Self> {
        let vision = config
            .vision
            .clone()
            .ok_or_else(|| EngineError::BadConfig {
                path: w.path().to_path_buf(),
                reason: "an image model needs image_size and patch_size".into(),
            })?;
        let dinov2 = config.model_type.starts_with("dinov2");
        let p = prefix(w, &config.model_type);
        let eps = config.norm_eps;
        let hidden = config.hidden;
        let conv = w.tensor(&format!("{p}embeddings.patch_embeddings.projection.weight"))?;
        let [ph, pw] = vision.patch_size;
        let expected = [hidden, vision.channels, ph, pw];
        if conv.shape != expected {
            return Err(EngineError::BadTensor {
                path: w.path().to_path_buf(),
                name: "patch projection".into(),
                reason: format!("shape {:?}, expected {expected:?}", conv.shape),
            });
        }
        let conv = HostTensor::new(
            vec![hidden, vision.channels * ph * pw],
            conv.data.into_vec(),
        );
        let conv_bias = w.tensor(&format!("{p}embeddings.patch_embeddings.projection.bias"))?;
        let patch = Linear::from_host(&conv.transposed(), Some(&conv_bias), device);
        let token = |name: &str| -> Result<Tensor<2>> {
            Ok(upload(
                &rows(w.tensor(&format!("{p}embeddings.{name}"))?),
                device,
            ))
        };
        let positions = rows(w.tensor(&format!("{p}embeddings.position_embeddings"))?);
        let [rows_trained, cols_trained] = vision.trained_grid();
        let trained = rows_trained * cols_trained + 1 + usize::from(vision.distillation_token);
        if positions.shape != [trained, hidden] {
            return Err(EngineError::BadTensor {
                path: w.path().to_path_buf(),
                name: "position embeddings".into(),
                reason: format!(
                    "shape {:?}, but image_size {:?} / patch_size {:?} give {trained} positions",
                    positions.shape, vision.image_size, vision.patch_size
                ),
            });
        }
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}encoder.layer.{i}");
            let lin =
                |name: &str, bias: bool| Linear::load(w, &format!("{l}.{name}"), bias, device);
            let norm = |name: &str| LayerNorm::load(w, &format!("{l}.{name}"), eps, device);
            let scale = |name: &str| -> Result<Option<Tensor<1>>> {
                if !vision.layer_scale {
                    return Ok(None);
                }
                Ok(Some(upload(
                    &w.tensor(&format!("{l}.{name}.lambda1"))?,
                    device,
                )))
            };
            let bias = config.attention_bias;
            layers.push(VitLayer {
                norm_before: norm(if dinov2 { "norm1" } else { "layernorm_before" })?,
                query: lin("attention.attention.query", bias)?,
                key: lin("attention.attention.key", bias)?,
                value: lin("attention.attention.value", bias)?,
                attn_out: lin("attention.output.dense", true)?,
                scale_attn: scale("layer_scale1")?,
                norm_after: norm(if dinov2 { "norm2" } else { "layernorm_after" })?,
                fc1: lin(
                    if dinov2 {
                        "mlp.fc1"
                    } else {
                        "intermediate.dense"
                    },
                    true,
                )?,
                fc2: lin(if dinov2 { "mlp.fc2" } else { "output.dense" }, true)?,
                scale_mlp: scale("layer_scale2")?,
            });
            progress((i + 1) as f32 / config.layers as f32);
        }
        let classifier = if vision.labels.is_empty() {
            None
        } else if w.contains("cls_classifier.weight") {
            Some(Classifier::ClsAndDistillation(Box::new((
                Linear::load(w, "cls_classifier", true, device)?,
                Linear::load(w, "distillation_classifier", true, device)?,
            ))))
        } else if w.contains("classifier.weight") {
            let head = Linear::load(w, "classifier", true, device)?;
            Some(if dinov2 {
                Classifier::ClsAndPatchMean(head)
            } else {
                Classifier::Cls(head)
            })
        } else {
            None
        };
        Ok(Self {
            patch,
            cls: token("cls_token")?,
            distillation: if vision.distillation_token {
                Some(token("distillation_token")?)
            } else {
                None
            },
            registers: if vision.register_tokens > 0 {
                Some(token("register_tokens")?)
            } else {
                None
            },
            positions,
            layers,
            final_norm: LayerNorm::load(w, &format!("{p}layernorm"), eps, device)?,
            classifier,
            config: config.clone(),
            vision,
        })
    }

    /// The patch grid [rows, cols] an image of this size is cut into (a remainder is dropped,
    /// as the patch convolution's stride does).
    pub fn grid(&self, height: usize, width: usize) -> [usize; 2] {
        [
            height / self.vision.patch_size[0],
            width / self.vision.patch_size[1],
        ]
    }

    /// Whether the model ends in a classifier (gradient targets are then classes).
    pub fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    pub fn forward(&self, input: &PixelInput, device: &Device) -> Result<Trace> {
        self.forward_taped(input, device, None)
    }

    /// As [`Vit::forward`], recording into a gradient `tape` when given: the input to the first
    /// layer, the final normed hidden states and the class logits.
    pub fn forward_taped(
        &self,
        input: &PixelInput,
        device: &Device,
        tape: Option<&GradientTape>,
    ) -> Result<Trace> {
        let [rows, cols] = self.grid(input.height, input.width);
        if rows == 0 || cols == 0 {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "a {}×{} image is smaller than one {}×{} patch",
                    input.width, input.height, self.vision.patch_size[1], self.vision.patch_size[0]
                ),
            });
        }
        let patches = upload(&patchify(input, self.vision.patch_size), device);
        let patches: Tensor<2> = self.patch.forward(patches);
        let mut front = vec![self.cls.clone()];
        if let Some(d) = &self.distillation {
            front.push(d.clone());
        }
        front.push(patches);
        let x = Tensor::cat(front, 0);
        let x = x + upload::<2>(&self.positions_for([rows, cols]), device);
        // Registers come after the position embeddings are added: they have none.
        let mut x = match &self.registers {
            Some(registers) => {
                let t = x.dims()[0];
                Tensor::cat(
                    vec![x.clone().slice(0..1), registers.clone(), x.slice(1..t)],
                    0,
                )
            }
            None => x,
        };
        if let Some(tape) = tape {
            tape.record_embedded(&x);
        }
        let heads = self.config.heads;
        let mut traces = Vec::with_capacity(self.layers.len());
        // Every patch sees every patch, and a picture's attention is always kept: rollout and
        // flow need it whole, and at ~1,400 tokens it is small.
        let open = KeyMask::new(&[x.dims()[0]], false, None, None);
        for (layer, attention) in self.layers.iter().zip(&self.config.layer_attention) {
            let h = layer.norm_before.forward(x.clone());
            let q = split_heads(layer.query.forward(h.clone()), heads);
            let k = split_heads(layer.key.forward(h.clone()), heads);
            let v = split_heads(layer.value.forward(h), heads);
            let (context, mut trace) = attend(q, k, v, &open, attention, true, None, tape);
            x = x + scaled(layer.attn_out.forward(context), &layer.scale_attn);
            let h = layer.norm_after.forward(x.clone());
            let h = activate(self.config.activation, layer.fc1.forward(h));
            x = x + scaled(layer.fc2.forward(h), &layer.scale_mlp);
            let t = x.dims()[0];
            trace.residual = residual_figures(&x, &[t])?;
            traces.push(trace);
        }
        let normed = self.final_norm.forward(x);
        let logits = self
            .classifier
            .as_ref()
            .map(|classifier| self.class_logits(classifier, normed.clone()));
        if let Some(tape) = tape {
            tape.record_hidden(&normed);
            if let Some(logits) = &logits {
                tape.record_logits(logits);
            }
        }
        let next_token_probs = match logits {
            Some(logits) => Some(to_vec(softmax(logits, 1))?),
            None => None,
        };
        Ok(Trace {
            layers: traces,
            next_token_probs,
        })
    }

    /// The class logits [1, classes] of the final normed hidden states `x`.
    fn class_logits(&self, classifier: &Classifier, x: Tensor<2>) -> Tensor<2> {
        let t = x.dims()[0];
        match classifier {
            Classifier::Cls(head) => head.forward(x.slice(0..1)),
            Classifier::ClsAndDistillation(heads) => {
                let (cls, dist) = heads.as_ref();
                (cls.forward(x.clone().slice(0..1)) + dist.forward(x.slice(1..2))) / 2.0
            }
            Classifier::ClsAndPatchMean(head) => {
                let patches = x.clone().slice(self.vision.prefix_tokens()..t).mean_dim(0);
                head.forward(Tensor::cat(vec![x.slice(0..1), patches], 1))
            }
        }
    }

    /// The position embeddings for a patch grid: as trained, or the patch part resized with
    /// bicubic interpolation exactly as Hugging Face's `interpolate_pos_encoding` calls
    /// `torch.nn.functional.interpolate` (DINOv2 with registers antialiases, the others do not).
    fn positions_for(&self, grid: [usize; 2]) -> HostTensor {
        let trained = self.vision.trained_grid();
        if grid == trained {
            return self.positions.clone();
        }
        let hidden = self.config.hidden;
        let front = 1 + usize::from(self.vision.distillation_token);
        let mut data = self.positions.data[..front * hidden].to_vec();
        let patch_part = &self.positions.data[front * hidden..];
        let how = if self.vision.register_tokens > 0 {
            GridInterpolation::BicubicAntialiased
        } else {
            GridInterpolation::Bicubic
        };
        data.extend(resize_grid(patch_part, trained, grid, hidden, how));
        HostTensor::new(vec![front + grid[0] * grid[1], hidden], data)
    }
}

fn scaled(x: Tensor<2>, scale: &Option<Tensor<1>>) -> Tensor<2> {
    match scale {
        Some(s) => x * s.clone().unsqueeze::<2>(),
        None => x,
    }
}

/// Cuts channels-first pixels into patches, one row per patch in row-major grid order, each
/// flattened as (channel, y, x) to match the patch convolution's weight layout.
pub(super) fn patchify(input: &PixelInput, [ph, pw]: [usize; 2]) -> HostTensor {
    let (h, w, c) = (input.height, input.width, input.channels);
    let (rows, cols) = (h / ph, w / pw);
    let mut data = Vec::with_capacity(rows * cols * c * ph * pw);
    for r in 0..rows {
        for col in 0..cols {
            for ch in 0..c {
                for y in 0..ph {
                    let start = ch * h * w + (r * ph + y) * w + col * pw;
                    data.extend_from_slice(&input.pixels[start..start + pw]);
                }
            }
        }
    }
    HostTensor::new(vec![rows * cols, c * ph * pw], data)
}
