//! Loading a model (Hugging Face folder or GGUF file) and running it to get a [`Trace`].

pub mod bert;
pub mod config;
pub mod gguf_file;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod safetensors_file;
pub mod weights;

use crate::error::{EngineError, Result};
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::trace::Trace;
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

/// The on-disk form a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    HuggingFaceFolder,
    Gguf,
}

enum Network {
    Bert(bert::Bert),
    Gpt2(gpt2::Gpt2),
    Llama(llama::Llama),
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
    pub tokenizer: TextTokenizer,
    pub source: PathBuf,
    pub format: ModelFormat,
    network: Network,
    device: Device,
}

impl Model {
    /// Loads a Hugging Face model folder or a GGUF file. `progress` receives 0..=1.
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
        } else {
            Err(EngineError::NotAModel {
                path: path.to_path_buf(),
                reason: "expected a Hugging Face model folder (config.json, model.safetensors, \
                         tokenizer.json) or a .gguf file"
                    .into(),
            })
        }
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
        let tokenizer_path = folder.join("tokenizer.json");
        if !tokenizer_path.exists() {
            return Err(EngineError::Missing {
                path: folder.to_path_buf(),
                what: "tokenizer.json".into(),
            });
        }
        let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
        let weights = safetensors_file::SafetensorsWeights::open_folder(folder)?;
        let network = build(&config, &weights, device, progress)?;
        Ok(Self {
            config,
            tokenizer,
            source: folder.to_path_buf(),
            format: ModelFormat::HuggingFaceFolder,
            network,
            device: device.clone(),
        })
    }

    fn load_gguf(path: &Path, device: &Device, progress: &dyn Fn(f32)) -> Result<Self> {
        let file = gguf_file::GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let weights = gguf_file::GgufLlamaWeights::new(file, config.heads, config.kv_heads);
        let network = build(&config, &weights, device, progress)?;
        Ok(Self {
            config,
            tokenizer,
            source: path.to_path_buf(),
            format: ModelFormat::Gguf,
            network,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Tokenises input `index` of a run, checking it against the model's limits.
    pub fn encode(&self, index: usize, text: &str, long: LongInput) -> Result<Encoded> {
        if text.trim().is_empty() {
            return Err(EngineError::BadInput {
                index,
                reason: "the prompt is empty".into(),
            });
        }
        let mut encoded = self.tokenizer.encode(text)?;
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

    /// Runs the model on one input and captures every layer.
    pub fn forward(&self, input: &TokenInput) -> Result<Trace> {
        if input.ids.is_empty() {
            return Err(EngineError::BadInput {
                index: 0,
                reason: "no tokens".into(),
            });
        }
        if let Some(&bad) = input
            .ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab)
        {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.config.vocab
                ),
            });
        }
        if input.ids.len() > self.config.max_positions {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} tokens is more than the model's {} positions",
                    input.ids.len(),
                    self.config.max_positions
                ),
            });
        }
        match &self.network {
            Network::Bert(m) => m.forward(input, &self.device),
            Network::Gpt2(m) => m.forward(input, &self.device),
            Network::Llama(m) => m.forward(input, &self.device),
        }
    }
}

fn build(
    config: &ModelConfig,
    weights: &dyn WeightSource,
    device: &Device,
    progress: &dyn Fn(f32),
) -> Result<Network> {
    Ok(match config.architecture {
        Architecture::Bert => Network::Bert(bert::Bert::load(config, weights, device, progress)?),
        Architecture::Gpt2 => Network::Gpt2(gpt2::Gpt2::load(config, weights, device, progress)?),
        Architecture::Llama => {
            Network::Llama(llama::Llama::load(config, weights, device, progress)?)
        }
    })
}

pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Reads a tensor back to the host as f32, waiting for the device.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Compute(format!("{e:?}")))
}
