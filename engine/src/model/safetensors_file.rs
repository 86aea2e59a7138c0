//! Weights from `model.safetensors` or a sharded `model.safetensors.index.json`.

use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// One or more memory-mapped safetensors files; headers are validated when opened, so a
/// truncated file fails at load time with its name, not in the middle of a forward pass.
pub struct SafetensorsWeights {
    shown_path: PathBuf,
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

impl SafetensorsWeights {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
    pub fn open_folder(folder: &Path) -> Result<Self> {
        let single = folder.join("model.safetensors");
        let index = folder.join("model.safetensors.index.json");
        if single.exists() {
            Self::open_files(&single, std::slice::from_ref(&single))
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| EngineError::BadWeights {
                    path: index.clone(),
                    reason: e.to_string(),
                })?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| EngineError::BadWeights {
                    path: index.clone(),
                    reason: "no weight_map".into(),
                })?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|f| folder.join(f))
                .collect();
            files.sort();
            files.dedup();
            Self::open_files(&index, &files)
        } else {
            Err(EngineError::Missing {
                path: folder.to_path_buf(),
                what: "weights (model.safetensors or model.safetensors.index.json)".into(),
            })
        }
    }

    pub fn open_files(shown_path: &Path, files: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
            // SAFETY: the map is read-only; a file changed underneath us is the user's doing and
            // at worst gives wrong numbers, which the header checks below make unlikely.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
            let (header_len, metadata) =
                safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| {
                    EngineError::BadWeights {
                        path: path.clone(),
                        reason: format!("{e:?}"),
                    }
                })?;
            for name in metadata.tensors().keys() {
                index.insert(name.clone(), shards.len());
            }
            shards.push(Shard {
                path: path.clone(),
                mmap,
                header_len,
                metadata,
            });
        }
        Ok(Self {
            shown_path: shown_path.to_path_buf(),
            shards,
            index,
        })
    }
}

impl WeightSource for SafetensorsWeights {
    fn path(&self) -> &Path {
        &self.shown_path
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let missing = || EngineError::Missing {
            path: self.shown_path.clone(),
            what: format!("weight {name}"),
        };
        let shard = &self.shards[*self.index.get(name).ok_or_else(missing)?];
        let info = shard.metadata.info(name).ok_or_else(missing)?;
        let start = 8 + shard.header_len + info.data_offsets.0;
        let end = 8 + shard.header_len + info.data_offsets.1;
        let bytes = &shard.mmap[start..end];
        let bad = |reason: String| EngineError::BadTensor {
            path: shard.path.clone(),
            name: name.to_string(),
            reason,
        };
        let data = decode_floats(info.dtype, bytes).map_err(bad)?;
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

/// Little-endian floats of a safetensors dtype, widened to f32.
pub fn decode_floats(dtype: Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    })
}
