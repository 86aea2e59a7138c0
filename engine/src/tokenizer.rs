//! Text to token ids, through the `tokenizers` crate: from tokenizer.json, or rebuilt from a
//! GGUF file's metadata the way transformers rebuilds it, so both give the same ids.

use crate::error::{EngineError, Result};
use crate::model::gguf_file::GgufFile;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// One tokenised input: ids, segment ids and the tokens as a person should read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub tokens: Vec<String>,
}

/// Checks that every special token a post-processor's templates name is defined in its
/// `special_tokens` with at least one id. The tokenizers crate reads such a file without
/// complaint and then panics ("no entry found for key") on the first input it encodes.
fn check_post_processor(processor: &Value) -> std::result::Result<(), String> {
    match processor["type"].as_str() {
        Some("Sequence") => processor["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .try_for_each(check_post_processor),
        Some("TemplateProcessing") => {
            let defined = &processor["special_tokens"];
            for template in ["single", "pair"] {
                let pieces = processor[template].as_array().into_iter().flatten();
                for id in pieces.filter_map(|p| p["SpecialToken"]["id"].as_str()) {
                    let entry = &defined[id];
                    let ids = entry["ids"].as_array().map_or(0, Vec::len);
                    let tokens = entry["tokens"].as_array().map_or(0, Vec::len);
                    if ids == 0 || ids != tokens {
                        return Err(format!(
                            "post_processor template '{template}' uses the special token {id:?}, \
                             which its special_tokens do not define (with ids and tokens)"
                        ));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    /// Byte-level BPE vocabularies spell spaces as 'Ġ'; their tokens are shown decoded.
    byte_level: bool,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |e: tokenizers::Error| EngineError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        if let Ok(json) = serde_json::from_str::<Value>(&text) {
            check_post_processor(&json["post_processor"]).map_err(|reason| {
                EngineError::Tokenizer {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        }
        let mut inner = text.parse::<tokenizers::Tokenizer>().map_err(bad)?;
        // Some tokenizer.json files (MiniLM's among them) pad every input to a fixed length and
        // truncate silently; headwise shows exactly the tokens of the input and handles long
        // inputs itself (an error, or truncation only when asked).
        inner.with_padding(None);
        inner.with_truncation(None).map_err(bad)?;
        let byte_level = matches!(
            inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        Ok(Self {
            inner,
            source: path.to_path_buf(),
            byte_level,
        })
    }

    /// The tokenizer stored in a GGUF file (`tokenizer.ggml.*`), built as transformers'
    /// GGUF converter builds it. Only byte-level BPE vocabularies (`gpt2`) are handled.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path().to_path_buf();
        let bad = |reason: String| EngineError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let kind = file
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no tokenizer.ggml.model in the metadata".into()))?;
        if kind != "gpt2" {
            return Err(bad(format!(
                "tokenizer model '{kind}' is not supported yet (only byte-level BPE, 'gpt2')"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            file.get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| bad(format!("no {key}")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = file
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        // Ids read from the file index the vocabulary: checked, not trusted.
        if types.len() > tokens.len() {
            return Err(bad(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let added: Vec<Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t, 3 | 4))
            .map(|(i, t)| {
                json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": *t == 4, "special": *t == 3})
            })
            .collect();
        let add_bos = file
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let bos = file
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64());
        let post_processor = match (add_bos, bos) {
            (true, Some(bos)) => {
                let bos_token = usize::try_from(bos)
                    .ok()
                    .and_then(|i| tokens.get(i))
                    .ok_or_else(|| {
                        bad(format!(
                            "tokenizer.ggml.bos_token_id {bos} is not one of the {} tokens",
                            tokens.len()
                        ))
                    })?;
                json!({"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": bos_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"SpecialToken": {"id": bos_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {bos_token.clone(): {"id": bos_token, "ids": [bos], "tokens": [bos_token]}}})
            }
            _ => Value::Null,
        };
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e: tokenizers::Error| bad(e.to_string()))?;
        Ok(Self {
            inner,
            source: path,
            byte_level: true,
        })
    }

    /// Tokenises one input with the model's special tokens ([CLS] … [SEP] for BERT).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| EngineError::Tokenizer {
                path: self.source.clone(),
                reason: e.to_string(),
            })?;
        let ids = encoding.get_ids().to_vec();
        let tokens = if self.byte_level {
            ids.iter().map(|&id| self.display(id)).collect()
        } else {
            encoding.get_tokens().to_vec()
        };
        Ok(Encoded {
            type_ids: encoding.get_type_ids().to_vec(),
            ids,
            tokens,
        })
    }

    /// A token as a person reads it (byte-level 'Ġthe' becomes ' the').
    pub fn display(&self, id: u32) -> String {
        if self.byte_level {
            self.inner.decode(&[id], false).unwrap_or_default()
        } else {
            self.inner.id_to_token(id).unwrap_or_default()
        }
    }

    /// The text of a run of ids, special tokens kept (a generated continuation).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// The id of a text that is exactly one token without special tokens added (" Paris"
    /// with its leading space, as a next token is spelled); None when it is not one token.
    pub fn single_token_id(&self, text: &str) -> Option<u32> {
        let encoding = self.inner.encode(text, false).ok()?;
        match encoding.get_ids() {
            [id] => Some(*id),
            _ => None,
        }
    }

    /// Whether an id is one of the tokenizer's special tokens ([CLS], [SEP], BOS, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }
}
