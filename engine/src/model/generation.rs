//! Continuing a text with a decoder: greedy, or sampled at a temperature with a seed, until N
//! new tokens or an end-of-text token. The Llama family decodes with a KV cache (the prompt
//! once, then one token at a time); other decoders, and RoPE scalings whose frequencies depend
//! on the length, run the whole sequence again for each token, which gives the same tokens more
//! slowly. The trace of the continued text is then one ordinary pass over prompt and
//! continuation.

use super::{Model, Network, TokenInput, to_vec};
use crate::error::{EngineError, Result};
use crate::trace::AttentionCapture;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: the most likely token (greedy); else sampled from softmax(logits / temperature).
    pub temperature: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            seed: 0,
        }
    }
}

/// The end-of-text ids a Hugging Face folder names: generation_config.json's `eos_token_id`,
/// else config.json's (a number or a list).
pub fn end_of_text_in(folder: &Path) -> Vec<u32> {
    for file in ["generation_config.json", "config.json"] {
        let Ok(text) = std::fs::read_to_string(folder.join(file)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let ids: Vec<u32> = match &json["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().map(|i| i as u32).into_iter().collect(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_u64().map(|i| i as u32))
                .collect(),
            _ => continue,
        };
        if !ids.is_empty() {
            return ids;
        }
    }
    Vec::new()
}

/// A small seeded generator (PCG-XSH-RR): the same seed gives the same continuation on every
/// machine, without another dependency.
struct Pcg(u64);

impl Pcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.0;
        let xorshifted = (((x >> 18) ^ x) >> 27) as u32;
        let rot = (x >> 59) as u32;
        let bits = xorshifted.rotate_right(rot);
        (bits >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// The next token from `logits`: the largest (the first of equals), or sampled.
fn pick(logits: &[f32], sampling: &Sampling, rng: &mut Pcg) -> u32 {
    if sampling.temperature <= 0.0 {
        return logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32;
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| (((v - max) / sampling.temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.next_f32() as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return i as u32;
        }
    }
    (weights.len() - 1) as u32
}

impl Model {
    /// Whether this model predicts the next token (and so can continue a text).
    pub fn is_decoder(&self) -> bool {
        matches!(
            self.network,
            Network::Llama(_) | Network::Gpt2(_) | Network::Gemma(_)
        )
    }

    /// Whether [`Model::generate`] decodes with a KV cache for a sequence of `len` tokens.
    pub fn generates_with_cache(&self, len: usize) -> bool {
        matches!(&self.network, Network::Llama(m) if m.caches_up_to(len))
    }

    /// Up to `new_tokens` tokens after `prompt`, stopping after an end-of-text token (which is
    /// kept, as transformers' `generate` keeps it). `progress` hears how many are done;
    /// `cancel` stops between tokens with [`EngineError::Cancelled`].
    pub fn generate(
        &self,
        prompt: &[u32],
        new_tokens: usize,
        sampling: Sampling,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<u32>> {
        self.generate_with(prompt, new_tokens, sampling, true, cancel, progress)
    }

    /// As [`Model::generate`]; `use_cache` false runs the whole sequence for every token even
    /// where a KV cache could serve (the reference the cache is tested against).
    pub fn generate_with(
        &self,
        prompt: &[u32],
        new_tokens: usize,
        sampling: Sampling,
        use_cache: bool,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<u32>> {
        if !self.is_decoder() {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{}: only a decoder (a model that predicts the next token) continues a text",
                    self.source.display()
                ),
            });
        }
        let limit = self.config.max_positions;
        if prompt.is_empty() || prompt.len() + new_tokens > limit {
            return Err(EngineError::BadInput {
                index: 0,
                reason: format!(
                    "{} prompt tokens and {new_tokens} new ones: the model has {limit} positions",
                    prompt.len()
                ),
            });
        }
        let mut rng = Pcg(sampling.seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut ids = prompt.to_vec();
        let mut generated = Vec::with_capacity(new_tokens);
        let cached = match &self.network {
            Network::Llama(m) if use_cache && m.caches_up_to(prompt.len() + new_tokens) => Some(m),
            _ => None,
        };
        let mut cache = super::llama::KvCache::default();
        let mut pending: Vec<u32> = prompt.to_vec();
        while generated.len() < new_tokens {
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let logits = match cached {
                Some(m) => to_vec(m.decode(&pending, &mut cache, &self.device)?)?,
                None => {
                    let input = TokenInput {
                        ids: ids.clone(),
                        type_ids: vec![0; ids.len()],
                        key_valid: None,
                    };
                    let trace = self.forward_with(&input, AttentionCapture::None)?;
                    // The probabilities' order is the logits' order: greedy picks alike, and
                    // sampling at temperature τ from p is sampling from logits/τ via ln p.
                    trace
                        .next_token_probs
                        .unwrap_or_default()
                        .iter()
                        .map(|p| p.ln())
                        .collect()
                }
            };
            let next = pick(&logits, &sampling, &mut rng);
            generated.push(next);
            ids.push(next);
            pending = vec![next];
            progress(generated.len());
            if self.end_of_text.contains(&next) {
                break;
            }
        }
        Ok(generated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_largest_and_sampling_follows_the_seed() {
        let mut rng = Pcg(1);
        let greedy = Sampling::default();
        assert_eq!(pick(&[0.1, 3.0, 3.0, -1.0], &greedy, &mut rng), 1);
        let hot = Sampling {
            temperature: 1.0,
            seed: 7,
        };
        let draw = |seed| {
            let mut rng = Pcg(seed);
            (0..20)
                .map(|_| pick(&[0.0, 0.0, 0.0, 0.0], &hot, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let spread: std::collections::HashSet<u32> = draw(3).into_iter().collect();
        assert!(spread.len() > 1);
    }
}
