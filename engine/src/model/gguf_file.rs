//! GGUF files (llama.cpp's format): metadata, tensor directory and dequantisation to f32.
//!
//! The file format only; what the names mean per architecture is in `gguf_config.rs` and
//! `gguf_weights.rs`. Every read is bounds-checked, so a truncated or
//! corrupt file is an error naming the file, never a panic or a huge allocation.

use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use half::{bf16, f16};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The most items a metadata array may hold: 16 times the largest vocabularies (262,144
/// tokens).
const MAX_ARRAY_ITEMS: usize = 1 << 22;

/// A metadata value. Integers are widened so callers need not care which width the writer chose.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::UInt(v) => Some(v),
            Self::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::UInt(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// ggml's tensor types that headwise can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block)
    fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }
}

#[derive(Debug, Clone)]
struct TensorEntry {
    /// In Hugging Face order: the slowest dimension first (GGUF lists the fastest first).
    shape: Vec<usize>,
    kind: GgmlType,
    start: usize,
    len: usize,
}

/// An opened GGUF file: metadata plus a directory of its tensors, read lazily from a memory map.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub metadata: HashMap<String, GgufValue>,
    tensors: HashMap<String, TensorEntry>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| format!("file ends inside its header (at byte {})", self.pos))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A count that must fit in what is left of the file, each item taking at least `min_size`
    /// bytes: guards against allocating terabytes for a corrupt length.
    fn count(&mut self, min_size: usize) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(format!(
                "a count of {n} at byte {} overruns the file",
                self.pos - 8
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.count(1)?;
        let bytes = self.take(n)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    /// The fewest bytes an array item of `kind` takes in the file.
    fn item_size(kind: u32) -> usize {
        match kind {
            2 | 3 => 2,
            4..=6 => 4,
            // A string's length, or a (nested, refused) array's type and length.
            8 | 10..=12 => 8,
            9 => 12,
            _ => 1,
        }
    }

    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<GgufValue, String> {
        Ok(match kind {
            0 => GgufValue::UInt(self.take(1)?[0] as u64),
            1 => GgufValue::Int(self.take(1)?[0] as i8 as i64),
            2 => GgufValue::UInt(u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as u64),
            3 => GgufValue::Int(i16::from_le_bytes(self.take(2)?.try_into().expect("2")) as i64),
            4 => GgufValue::UInt(self.u32()? as u64),
            5 => GgufValue::Int(self.u32()? as i32 as i64),
            6 => GgufValue::Float(f32::from_le_bytes(self.take(4)?.try_into().expect("4")) as f64),
            7 => GgufValue::Bool(self.take(1)?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 if depth == 0 => {
                let item_kind = self.u32()?;
                // Each item takes at least its type's size in the file, so a length retyped to
                // cover the file is caught here; and no metadata array (vocabularies, merges)
                // comes near MAX_ARRAY_ITEMS, which bounds what the items take in memory
                // (a GgufValue is 32 bytes, however small the item in the file).
                let n = self.count(Self::item_size(item_kind))?;
                if n > MAX_ARRAY_ITEMS {
                    return Err(format!(
                        "an array of {n} items at byte {}: more than the {MAX_ARRAY_ITEMS} \
                         this reader accepts",
                        self.pos - 8
                    ));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_kind, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::UInt(self.u64()?),
            11 => GgufValue::Int(self.u64()? as i64),
            12 => GgufValue::Float(f64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        // SAFETY: read-only map of a file we do not modify.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
        let (metadata, tensors) = Self::parse(&mmap).map_err(|reason| EngineError::BadWeights {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            metadata,
            tensors,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        bytes: &[u8],
    ) -> std::result::Result<(HashMap<String, GgufValue>, HashMap<String, TensorEntry>), String>
    {
        let mut c = Cursor { bytes, pos: 0 };
        if c.take(4)
            .map_err(|_| "not a GGUF file (too short)".to_string())?
            != b"GGUF"
        {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let tensor_count = c.count(24)?;
        let kv_count = c.count(12)?;
        let mut metadata = HashMap::new();
        for _ in 0..kv_count {
            let key = c.string()?;
            let kind = c.u32()?;
            metadata.insert(key, c.value(kind, 0)?);
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(32) as usize;
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(format!("bad alignment {alignment}"));
        }
        let mut raw = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(format!("tensor {name}: {n_dims} dimensions"));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64()? as usize);
            }
            let type_id = c.u32()?;
            let offset = c.u64()? as usize;
            raw.push((name, dims, type_id, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = HashMap::new();
        for (name, dims, type_id, offset) in raw {
            let kind = GgmlType::from_id(type_id).ok_or_else(|| {
                format!("tensor {name}: ggml type {type_id} is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0)")
            })?;
            let count = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| format!("tensor {name}: size overflows"))?;
            let (block_elems, block_bytes) = kind.block();
            if count % block_elems != 0 {
                return Err(format!(
                    "tensor {name}: {count} elements is not whole blocks"
                ));
            }
            // Checked: a count that fits in 64 bits can still overflow as bytes.
            let len = (count / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(|| format!("tensor {name}: size overflows"))?;
            let start = data_start
                .checked_add(offset)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= bytes.len()))
                .ok_or_else(|| {
                    format!("tensor {name} lies past the end of the file (truncated?)")
                })?;
            let shape = dims.into_iter().rev().collect();
            tensors.insert(
                name,
                TensorEntry {
                    shape,
                    kind,
                    start,
                    len,
                },
            );
        }
        Ok((metadata, tensors))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Every tensor's name, in no particular order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn tensor_type(&self, name: &str) -> Option<GgmlType> {
        self.tensors.get(name).map(|t| t.kind)
    }

    /// A tensor dequantised to f32, in Hugging Face's shape order.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let entry = self.tensors.get(name).ok_or_else(|| EngineError::Missing {
            path: self.path.clone(),
            what: format!("tensor {name}"),
        })?;
        let bytes = &self.mmap[entry.start..entry.start + entry.len];
        Ok(HostTensor::new(
            entry.shape.clone(),
            dequantize(entry.kind, bytes),
        ))
    }
}

/// ggml block formats to f32, following ggml's reference dequantisers.
pub fn dequantize(kind: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match kind {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(half).collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(bytes.len() / 34 * 32);
            for block in bytes.chunks_exact(34) {
                let d = half(&block[0..2]);
                out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
            }
            out
        }
        GgmlType::Q4_0 => {
            let mut out = vec![0.0; bytes.len() / 18 * 32];
            for (block, dst) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = half(&block[0..2]);
                for (j, &q) in block[2..].iter().enumerate() {
                    dst[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
                    dst[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
            out
        }
        GgmlType::Q4_1 => {
            let mut out = vec![0.0; bytes.len() / 20 * 32];
            for (block, dst) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let d = half(&block[0..2]);
                let m = half(&block[2..4]);
                for (j, &q) in block[4..].iter().enumerate() {
                    dst[j] = (q & 0x0F) as f32 * d + m;
                    dst[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            out
        }
    }
}
