//! Loading a model (Hugging Face folder, GGUF file or ONNX graph) and running it to get a
//! [`Trace`].

pub mod bert;
pub mod config;
pub mod cpu_attention;
pub mod cpu_kernels;
pub mod gemma;
pub mod generation;
pub mod gguf_config;
pub mod gguf_file;
pub mod gguf_weights;
pub mod gpt2;
pub mod gpu_attention;
pub mod gradient_tape;
pub mod gradients;
pub mod key_mask;
pub mod layers;
pub mod llama;
pub mod llama_config;
pub mod modernbert;
pub mod onnx_file;
pub mod packing;
pub mod residual;
pub mod rope;
pub mod safetensors_file;
pub mod shapes;
pub mod vision_tower;
pub mod vit;
pub mod weights;

use crate::edits::Edit;
use crate::error::{EngineError, Result};
use crate::imaging::{ImageProcessor, PreparedImage, RgbImage};
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::trace::{AttentionCapture, Trace};
use burn::tensor::{Device, Tensor};
use config::{Architecture, ModelConfig};
use std::path::{Path, PathBuf};
use weights::WeightSource;

/// Token ids ready for a forward pass.
#[derive(Debug, Clone)]
pub struct TokenInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Encoders only: which keys are real tokens (false for padding). None means all are.
    pub key_valid: Option<Vec<bool>>,
}

impl From<&Encoded> for TokenInput {
    fn from(e: &Encoded) -> Self {
        Self {
            ids: e.ids.clone(),
            type_ids: e.type_ids.clone(),
            key_valid: None,
        }
    }
}

/// An image ready for a forward pass: normalised pixel values, channels first.
#[derive(Debug, Clone)]
pub struct PixelInput {
    pub pixels: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl From<&PreparedImage> for PixelInput {
    fn from(p: &PreparedImage) -> Self {
        Self {
            pixels: p.pixels.clone(),
            channels: 3,
            height: p.view.height,
            width: p.view.width,
        }
    }
}

/// The on-disk form a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    HuggingFaceFolder,
    Gguf,
    Onnx,
}

/// What turns a user's input into model input: a tokenizer for text, an image processor for
/// pictures.
pub enum Preprocessor {
    Text(Box<TextTokenizer>),
    Image(ImageProcessor),
}

enum Network {
    Bert(bert::Bert),
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
    Gemma(gemma::Gemma),
    Vit(Box<vit::Vit>),
    VisionTower(Box<vision_tower::VisionTower>),
    ModernBert(modernbert::ModernBert),
}

/// What the caller asks of a too-long prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongInput {
    /// A clear error naming the input and the model's limit.
    #[default]
    Reject,
    /// Keep the first `max_positions` tokens.
    Truncate,
}

/// A loaded model: its config, tokenizer and weights on a device.
pub struct Model {
    pub config: ModelConfig,
    pub preprocessor: Preprocessor,
    pub source: PathBuf,
    pub format: ModelFormat,
    /// The token ids that end a generation (generation_config.json's, else config.json's
    /// `eos_token_id`; GGUF's `tokenizer.ggml.eos_token_id`); empty when the model names none.
    pub end_of_text: Vec<u32>,
    network: Network,
    device: Device,
}

impl Model {
    /// Loads a Hugging Face model folder, a GGUF file or an ONNX graph of a ViT. `progress`
    /// receives 0..=1.
    pub fn load(path: &Path, device: &Device, progress: &dyn Fn(f32)) -> Result<Self> {
        if !path.exists() {
            return Err(EngineError::NotAModel {
                path: path.to_path_buf(),
                reason: "no such file or folder".into(),
            });
        }
        if path.is_dir() {
            Self::load_folder(path, device, progress)
        } else if is_gguf(path) {
            Self::load_gguf(path, device, progress)
        } else if is_onnx(path) {
            Self::load_onnx(path, device, progress)
        } else {
            Err(EngineError::NotAModel {
                path: path.to_path_buf(),
                reason: "expected a Hugging Face model folder (config.json, model.safetensors, \
                         tokenizer.json or preprocessor_config.json), a .gguf or an .onnx file"
                    .into(),
            })
        }
    }

    /// The tokenizer or image processor a folder (or the folder beside an ONNX file) holds.
    fn preprocessor_in(folder: &Path, config: &ModelConfig) -> Result<Preprocessor> {
        if let Some(vision) = &config.vision {
            let path = folder.join("preprocessor_config.json");
            if path.exists() {
                return Ok(Preprocessor::Image(ImageProcessor::from_json_file(&path)?));
            }
            if vision.channels != 3 {
                return Err(EngineError::BadConfig {
                    path: folder.to_path_buf(),
                    reason: format!("{} image channels; only RGB is supported", vision.channels),
                });
            }
            return Err(EngineError::Missing {
                path: folder.to_path_buf(),
                what: "preprocessor_config.json (how images are resized and normalised)".into(),
            });
        }
        let tokenizer_path = folder.join("tokenizer.json");
        if !tokenizer_path.exists() {
            return Err(EngineError::Missing {
                path: folder.to_path_buf(),
                what: "tokenizer.json".into(),
            });
        }
        let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
        Ok(Preprocessor::Text(Box::new(tokenizer)))
    }

    fn load_onnx(path: &Path, device: &Device, progress: &dyn Fn(f32)) -> Result<Self> {
        let weights = onnx_file::OnnxWeights::open(path)?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let beside = folder.join("config.json");
        let config = if beside.exists() {
            ModelConfig::from_json_file(&beside)?
        } else {
            ModelConfig::from_json(&weights.infer_config()?, path)?
        };
        let preprocessor = match Self::preprocessor_in(folder, &config) {
            Ok(p) => p,
            // A bare graph: the usual preprocessing of its model type.
            Err(EngineError::Missing { .. }) if config.vision.is_some() => {
                Preprocessor::Image(ImageProcessor::default_for(&config.model_type))
            }
            Err(e) => return Err(e),
        };
        let network = build(&config, &weights, device, progress)?;
        Ok(Self {
            config,
            preprocessor,
            source: path.to_path_buf(),
            format: ModelFormat::Onnx,
            end_of_text: Vec::new(),
            network,
            device: device.clone(),
        })
    }

    fn load_folder(folder: &Path, device: &Device, progress: &dyn Fn(f32)) -> Result<Self> {
        let config_path = folder.join("config.json");
        if !config_path.exists() {
            return Err(EngineError::Missing {
                path: folder.to_path_buf(),
                what: "config.json".into(),
            });
        }
        let config = ModelConfig::from_json_file(&config_path)?;
        let preprocessor = Self::preprocessor_in(folder, &config)?;
        let weights = safetensors_file::SafetensorsWeights::open_folder(folder)?;
        let network = build(&config, &weights, device, progress)?;
        Ok(Self {
            config,
            preprocessor,
            source: folder.to_path_buf(),
            format: ModelFormat::HuggingFaceFolder,
            end_of_text: generation::end_of_text_in(folder),
            network,
            device: device.clone(),
        })
    }

    fn load_gguf(path: &Path, device: &Device, progress: &dyn Fn(f32)) -> Result<Self> {
        let file = gguf_file::GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let end_of_text = file
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|id| id as u32)
            .into_iter()
            .collect();
        let weights = gguf_weights::GgufWeights::new(file, &config)?;
        let network = build(&config, &weights, device, progress)?;
        Ok(Self {
            config,
            preprocessor: Preprocessor::Text(Box::new(tokenizer)),
            source: path.to_path_buf(),
            format: ModelFormat::Gguf,
            end_of_text,
            network,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How each layer's attention logits follow from its captured q and k (scale, soft-cap,
    /// sliding window, RoPE), one entry per layer.
    pub fn layer_attention(&self) -> Vec<crate::trace::LayerAttention> {
        self.config.layer_attention.clone()
    }

    /// Does this model take pictures (rather than text)?
    pub fn takes_images(&self) -> bool {
        matches!(self.preprocessor, Preprocessor::Image(_))
    }

    /// The text tokenizer, or an error saying this model takes images.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        match &self.preprocessor {
            Preprocessor::Text(t) => Ok(t),
            Preprocessor::Image(_) => Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} is an image model ({}): give it an image, not text",
                    self.source.display(),
                    self.config.model_type
                ),
            }),
        }
    }

    /// Turns input `index`, a picture, into what the model sees: resized, cropped, normalised.
    pub fn prepare_image(&self, index: usize, image: &RgbImage) -> Result<PreparedImage> {
        let Preprocessor::Image(processor) = &self.preprocessor else {
            return Err(EngineError::BadInput {
                index,
                reason: format!(
                    "{} is a text model ({}): give it text, not an image",
                    self.source.display(),
                    self.config.model_type
                ),
            });
        };
        processor
            .check_size(image.width, image.height)
            .map_err(|reason| EngineError::BadInput { index, reason })?;
        Ok(processor.prepare(image))
    }

    /// The patch grid [rows, cols] of a prepared picture, and the tokens before the patches.
    pub fn patch_layout(&self, height: usize, width: usize) -> Option<([usize; 2], usize)> {
        let v = self.config.vision.as_ref()?;
        Some((
            [height / v.patch_size[0], width / v.patch_size[1]],
            v.prefix_tokens(),
        ))
    }

    /// Runs an image model on one picture and captures every layer.
    pub fn forward_image(&self, input: &PixelInput) -> Result<Trace> {
        match &self.network {
            Network::Vit(m) => m.forward(input, &self.device),
            Network::VisionTower(m) => m.forward(input, &self.device),
            _ => Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} is a text model ({}): give it text, not an image",
                    self.source.display(),
                    self.config.model_type
                ),
            }),
        }
    }

    /// Tokenises every input of a run, each checked as [`Model::encode`] does; the first that
    /// fails is the error.
    pub fn encode_all(&self, texts: &[String], long: LongInput) -> Result<Vec<Encoded>> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| self.encode(index, text, long))
            .collect()
    }

    /// Tokenises input `index` of a run, checking it against the model's limits.
    pub fn encode(&self, index: usize, text: &str, long: LongInput) -> Result<Encoded> {
        let tokenizer = self.tokenizer().map_err(|e| match e {
            EngineError::BadInput { reason, .. } => EngineError::BadInput { index, reason },
            other => other,
        })?;
        if text.trim().is_empty() {
            return Err(EngineError::BadInput {
                index,
                reason: "the prompt is empty".into(),
            });
        }
        let mut encoded = tokenizer.encode(text)?;
        let max = self.config.max_positions;
        if encoded.ids.len() > max {
            match long {
                LongInput::Reject => {
                    return Err(EngineError::BadInput {
                        index,
                        reason: format!(
                            "the prompt is {} tokens, longer than the model's {max} positions \
                             (ask for truncation to keep the first {max})",
                            encoded.ids.len()
                        ),
                    });
                }
                LongInput::Truncate => {
                    encoded.ids.truncate(max);
                    encoded.type_ids.truncate(max);
                    encoded.tokens.truncate(max);
                }
            }
        }
        Ok(encoded)
    }

    /// Runs the model on one input and captures every layer, its attention materialised.
    pub fn forward(&self, input: &TokenInput) -> Result<Trace> {
        self.forward_with(input, AttentionCapture::Full)
    }

    /// Runs the model on one input and captures every layer, keeping attention as `capture`
    /// says.
    pub fn forward_with(&self, input: &TokenInput, capture: AttentionCapture) -> Result<Trace> {
        self.forward_edited(input, capture, &[])
    }

    /// As [`Model::forward_with`], with `edits` on the pass (see [`crate::edits`]): attention,
    /// q, k and the next-token distribution are what the edited model computes.
    pub fn forward_edited(
        &self,
        input: &TokenInput,
        capture: AttentionCapture,
        edits: &[Edit],
    ) -> Result<Trace> {
        self.forward_edited_watched(input, capture, edits, &|_| true)
    }

    /// As [`Model::forward_edited`], `watch` told of each layer as the pass enters it (see
    /// [`packing::LayerWatch`]): returning false stops the pass with [`EngineError::Cancelled`].
    pub fn forward_edited_watched(
        &self,
        input: &TokenInput,
        capture: AttentionCapture,
        edits: &[Edit],
        watch: &dyn Fn(usize) -> bool,
    ) -> Result<Trace> {
        self.check(0, input)?;
        let c = &self.config;
        for edit in edits {
            edit.check(c.layers, c.heads, input.ids.len())?;
        }
        let packing = packing::Packing {
            keep_attention: self.keeps_attention(capture, input.ids.len()),
            edits: edits.to_vec(),
            watch: Some(packing::LayerWatch(watch)),
            ..packing::Packing::single(input.ids.len())
        };
        let mut traces = self.forward_packed(input, &packing)?;
        Ok(traces.remove(0))
    }

    fn keeps_attention(&self, capture: AttentionCapture, tokens: usize) -> bool {
        capture.keeps(self.config.layers, self.config.heads, tokens)
    }

    /// One pass over checked text inputs laid end to end in `input`: one trace per input.
    fn forward_packed(&self, input: &TokenInput, packing: &packing::Packing) -> Result<Vec<Trace>> {
        let d = &self.device;
        match &self.network {
            Network::Bert(m) => m.forward_packed(input, packing, d),
            Network::Gpt2(m) => m.forward_packed(input, packing, d),
            Network::Llama(m) => m.forward_packed(input, packing, d),
            Network::Gemma(m) => m.forward_packed(input, packing, d),
            Network::ModernBert(m) => m.forward_packed(input, packing, d),
            Network::Vit(_) | Network::VisionTower(_) => Err(EngineError::BadInput {
                index: 0,
                reason: "an image model takes pixels, not token ids".into(),
            }),
        }
    }

    /// Many inputs, packed into passes of at most `pack_tokens` tokens (see [`packing`]): the
    /// same traces as one [`Model::forward_with`] each, to rounding, in fewer passes. `done` is
    /// told how many inputs are finished after each pass; returning false stops the run there.
    pub fn forward_many(
        &self,
        inputs: &[TokenInput],
        pack_tokens: usize,
        capture: AttentionCapture,
        done: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<Trace>> {
        self.forward_many_watched(inputs, pack_tokens, capture, &mut |p| match p {
            PassProgress::Layer { .. } => true,
            PassProgress::Done(n) => done(n),
        })
    }

    /// As [`Model::forward_many`], `progress` told also of each layer a pass enters: returning
    /// false there stops the run mid-pass, with the traces of the passes finished before it.
    pub fn forward_many_watched(
        &self,
        inputs: &[TokenInput],
        pack_tokens: usize,
        capture: AttentionCapture,
        progress: &mut dyn FnMut(PassProgress) -> bool,
    ) -> Result<Vec<Trace>> {
        for (index, input) in inputs.iter().enumerate() {
            self.check(index, input)?;
        }
        let mut traces = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            // Padding masks stay per input; everything else packs up to the budget.
            let mut end = start + 1;
            let mut total = inputs[start].ids.len();
            while end < inputs.len()
                && inputs[end].key_valid.is_none()
                && inputs[start].key_valid.is_none()
                && total + inputs[end].ids.len() <= pack_tokens
            {
                total += inputs[end].ids.len();
                end += 1;
            }
            let group = &inputs[start..end];
            let lengths: Vec<usize> = group.iter().map(|i| i.ids.len()).collect();
            let passed = {
                let progress_cell = std::cell::RefCell::new(&mut *progress);
                let watch = |layer| {
                    (progress_cell.borrow_mut())(PassProgress::Layer {
                        inputs: start..end,
                        layer,
                    })
                };
                let packing = packing::Packing {
                    keep_attention: lengths.iter().all(|&t| self.keeps_attention(capture, t)),
                    edits: Vec::new(),
                    tape: None,
                    span: None,
                    watch: Some(packing::LayerWatch(&watch)),
                    lengths,
                };
                if let [single] = group {
                    // Its own ids as they are, with any padding mask.
                    self.forward_packed(single, &packing)
                } else {
                    let packed = TokenInput {
                        ids: group.iter().flat_map(|i| i.ids.iter().copied()).collect(),
                        type_ids: group
                            .iter()
                            .flat_map(|i| i.type_ids.iter().copied())
                            .collect(),
                        key_valid: None,
                    };
                    self.forward_packed(&packed, &packing)
                }
            };
            match passed {
                Ok(done) => traces.extend(done),
                Err(EngineError::Cancelled) => break,
                Err(e) => return Err(e),
            }
            start = end;
            if !progress(PassProgress::Done(start)) {
                break;
            }
        }
        Ok(traces)
    }

    /// What every text forward pass needs of its input: a text model, tokens, ids inside the
    /// vocabulary, and no more tokens than positions.
    fn check(&self, index: usize, input: &TokenInput) -> Result<()> {
        self.tokenizer()?;
        if self.config.vision.is_some() {
            return Err(EngineError::BadInput {
                index,
                reason: "an image model takes pixels, not token ids".into(),
            });
        }
        if input.ids.is_empty() {
            return Err(EngineError::BadInput {
                index,
                reason: "no tokens".into(),
            });
        }
        if let Some(&bad) = input
            .ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab)
        {
            return Err(EngineError::BadInput {
                index,
                reason: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.config.vocab
                ),
            });
        }
        if input.ids.len() > self.config.max_positions {
            return Err(EngineError::BadInput {
                index,
                reason: format!(
                    "{} tokens is more than the model's {} positions",
                    input.ids.len(),
                    self.config.max_positions
                ),
            });
        }
        Ok(())
    }
}

fn build(
    config: &ModelConfig,
    weights: &dyn WeightSource,
    device: &Device,
    progress: &dyn Fn(f32),
) -> Result<Network> {
    // Every weight is checked against the shape the config implies as it is read (shapes.rs).
    let checked = shapes::Checked::new(weights, config, weights.path())?;
    let weights: &dyn WeightSource = &checked;
    Ok(match config.architecture {
        Architecture::Bert => Network::Bert(bert::Bert::load(config, weights, device, progress)?),
        Architecture::Gpt2 => Network::Gpt2(gpt2::Gpt2::load(config, weights, device, progress)?),
        Architecture::Llama => {
            Network::Llama(llama::Llama::load(config, weights, device, progress)?)
        }
        Architecture::Gemma => {
            Network::Gemma(gemma::Gemma::load(config, weights, device, progress)?)
        }
        Architecture::Vit => {
            Network::Vit(Box::new(vit::Vit::load(config, weights, device, progress)?))
        }
        Architecture::ModernBert => Network::ModernBert(modernbert::ModernBert::load(
            config, weights, device, progress,
        )?),
        Architecture::VisionTower => Network::VisionTower(Box::new(
            vision_tower::VisionTower::load(config, weights, device, progress)?,
        )),
    })
}

pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// How a run of many inputs goes, pass by pass ([`Model::forward_many_watched`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassProgress {
    /// The pass over inputs `inputs` is about to compute layer `layer`.
    Layer {
        inputs: std::ops::Range<usize>,
        layer: usize,
    },
    /// The first this many inputs are finished.
    Done(usize),
}

/// Reads a tensor back to the host as f32, waiting for the device.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Compute(format!("{e:?}")))
}
