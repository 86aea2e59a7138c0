//! Building damaged files from the fixtures, for the hostile-file and fuzz tests: a GGUF file
//! taken apart and put back together with one field changed, session files with edited metadata
//! or tensors, PNG chunks with their CRCs, a small deterministic mutator, and a measure of the
//! largest allocation a piece of code asks for (so a test can tell "refused" from "refused after
//! asking for 30 GB").

use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// The largest allocation asked for

/// The system allocator, noting the largest single request made on each thread. A test binary
/// installs it with `#[global_allocator]`; [`largest_allocation`] then measures a closure.
pub struct Measuring;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations made while the thread is being torn down are not measured.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; noting the size touches
// only a thread-local cell, which allocates nothing.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the largest single allocation it asked for on this
/// thread (work it hands to other threads is not seen). Meaningful only in a binary that
/// installs [`Measuring`].
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// A GGUF file taken apart: its metadata values as raw bytes (type id, then the value's bytes as
/// stored) and its tensors' directory entries and data, so a test can change one field and
/// write a file that is otherwise well formed (offsets and alignment recomputed).
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    /// (key, type id, value bytes as stored after the type id)
    pub kv: Vec<(String, u32, Vec<u8>)>,
    /// (name, dims as stored (fastest first), ggml type, data)
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn value_len(bytes: &[u8], kind: u32) -> usize {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8 + u64_at(0),
        9 => {
            let item = u32::from_le_bytes(bytes[..4].try_into().unwrap());
            let n = u64_at(4);
            let mut at = 12;
            for _ in 0..n {
                at += value_len(&bytes[at..], item);
            }
            at
        }
        other => panic!("fixture GGUF has value type {other}"),
    }
}

impl Gguf {
    /// Parses a well-formed GGUF file (a fixture; panics on anything else).
    pub fn read(path: &Path) -> Self {
        let b = std::fs::read(path).unwrap();
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(&b[..4], b"GGUF");
        let version = u32_at(4);
        let (n_tensors, n_kv) = (u64_at(8) as usize, u64_at(16) as usize);
        let mut at = 24;
        let string = |at: &mut usize| {
            let n = u64_at(*at) as usize;
            let s = String::from_utf8(b[*at + 8..*at + 8 + n].to_vec()).unwrap();
            *at += 8 + n;
            s
        };
        let mut kv = Vec::new();
        let mut alignment = 32;
        for _ in 0..n_kv {
            let key = string(&mut at);
            let kind = u32_at(at);
            at += 4;
            let len = value_len(&b[at..], kind);
            if key == "general.alignment" {
                alignment = u32_at(at) as usize;
            }
            kv.push((key, kind, b[at..at + len].to_vec()));
            at += len;
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = string(&mut at);
            let n_dims = u32_at(at) as usize;
            at += 4;
            let dims: Vec<u64> = (0..n_dims).map(|i| u64_at(at + 8 * i)).collect();
            at += 8 * n_dims;
            let kind = u32_at(at);
            let offset = u64_at(at + 4) as usize;
            at += 12;
            infos.push((name, dims, kind, offset));
        }
        let data_start = at.div_ceil(alignment) * alignment;
        let mut offsets: Vec<usize> = infos.iter().map(|t| t.3).collect();
        offsets.push(b.len() - data_start);
        offsets.sort();
        let tensors = infos
            .into_iter()
            .map(|(name, dims, kind, offset)| {
                let end = *offsets.iter().find(|&&o| o > offset).unwrap();
                let data = b[data_start + offset..data_start + end].to_vec();
                (name, dims, kind, data)
            })
            .collect();
        Self {
            version,
            kv,
            tensors,
        }
    }

    /// The file's bytes, with 32-byte alignment.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        let put_string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        for (key, kind, value) in &self.kv {
            put_string(&mut out, key);
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(value);
        }
        let mut offset = 0usize;
        for (name, dims, kind, data) in &self.tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += data.len().div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }

    /// Sets metadata `key` to an unsigned 64-bit value (type 10), adding it if absent.
    pub fn set_u64(&mut self, key: &str, value: u64) {
        self.set_raw(key, 10, value.to_le_bytes().to_vec());
    }

    /// Sets metadata `key` to a raw (type, bytes) value, adding it if absent.
    pub fn set_raw(&mut self, key: &str, kind: u32, bytes: Vec<u8>) {
        match self.kv.iter_mut().find(|(k, _, _)| k == key) {
            Some(entry) => {
                entry.1 = kind;
                entry.2 = bytes;
            }
            None => self.kv.push((key.to_string(), kind, bytes)),
        }
    }

    pub fn value(&self, key: &str) -> Option<&(String, u32, Vec<u8>)> {
        self.kv.iter().find(|(k, _, _)| k == key)
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut (String, Vec<u64>, u32, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors (weights and sessions)

/// A safetensors file taken apart: its metadata and its tensors as (dtype, shape, bytes).
#[derive(Clone, Debug)]
pub struct Safetensors {
    pub metadata: HashMap<String, String>,
    pub tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Safetensors {
    pub fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        Self {
            metadata: meta.metadata().clone().unwrap_or_default(),
            tensors: st
                .tensors()
                .into_iter()
                .map(|(name, v)| (name, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
                .collect(),
        }
    }

    /// The session metadata (`headwise` key) as JSON.
    pub fn session_meta(&self) -> Value {
        serde_json::from_str(&self.metadata["headwise"]).unwrap()
    }

    pub fn set_session_meta(&mut self, meta: &Value) {
        self.metadata
            .insert("headwise".into(), serde_json::to_string(meta).unwrap());
    }

    /// Writes the file; shapes that disagree with the bytes are written as given only if
    /// safetensors accepts them, so use byte counts that match.
    pub fn write(&self, path: &Path) {
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(name, (dtype, shape, bytes))| {
                (
                    name.clone(),
                    TensorView::new(*dtype, shape.clone(), bytes).expect("consistent tensor"),
                )
            })
            .collect();
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize_to_file(views, meta, path).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// PNG

/// CRC-32 as PNG uses it (ISO 3309, reflected, polynomial 0xEDB88320).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The chunks of a PNG file: (type, data).
pub fn png_chunks(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut at = 8;
    let mut chunks = Vec::new();
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
        chunks.push((kind, bytes[at + 8..at + 8 + len].to_vec()));
        at += 12 + len;
    }
    chunks
}

/// A PNG file from chunks, each with a correct CRC.
pub fn png_from_chunks(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in chunks {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A deterministic mutator

/// xorshift64*: a fixed seed gives the same cases on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Values that break size arithmetic: zero, one, powers of two around the integer widths,
/// and the largest values.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    255,
    65_535,
    65_536,
    100_000,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// One to four random edits of `bytes`: flipped bits, overwritten bytes, an interesting integer
/// written over 1, 2, 4 or 8 bytes (little- or big-endian), a cut, a duplicated or deleted
/// span.
pub fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(7) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next_u64() as u8,
            2 | 3 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let le = value.to_le_bytes();
                let be = value.to_be_bytes();
                let src: Vec<u8> = if rng.below(2) == 0 {
                    le[..width].to_vec()
                } else {
                    be[8 - width..].to_vec()
                };
                for (i, b) in src.into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            4 => out.truncate(at),
            5 => {
                let len = rng.below(64.min(out.len() - at)) + 1;
                let span = out[at..(at + len).min(out.len())].to_vec();
                let to = rng.below(out.len());
                out.splice(to..to, span);
            }
            _ => {
                let len = rng.below(64.min(out.len() - at)) + 1;
                out.drain(at..(at + len).min(out.len()));
            }
        }
    }
    out
}

/// Edits a JSON document at random: a number somewhere replaced by an interesting one (as
/// written, negated or as a float), a key removed, or a value replaced by null, a string, an
/// empty array or object.
pub fn mutate_json(value: &Value, rng: &mut Rng) -> Value {
    let mut v = value.clone();
    let mut paths = Vec::new();
    collect_paths(&v, &mut Vec::new(), &mut paths);
    for _ in 0..1 + rng.below(3) {
        if paths.is_empty() {
            break;
        }
        let path = &paths[rng.below(paths.len())];
        let Some(slot) = pointer_mut(&mut v, path) else {
            continue;
        };
        let n = INTERESTING[rng.below(INTERESTING.len())];
        *slot = match rng.below(8) {
            0..=2 => Value::from(n),
            3 => Value::from(-(n.min(i64::MAX as u64) as i64)),
            4 => Value::from(n as f64 * 0.5),
            5 => Value::Null,
            6 => Value::from("x"),
            _ => match slot {
                Value::Array(_) => Value::Array(Vec::new()),
                _ => Value::Object(Default::default()),
            },
        };
    }
    v
}

fn collect_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(k.clone());
                collect_paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            // Long arrays (token ids) add noise without new shapes: their first items will do.
            for (i, child) in items.iter().enumerate().take(4) {
                at.push(i.to_string());
                collect_paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn pointer_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for key in path {
        cur = match cur {
            Value::Object(map) => map.get_mut(key)?,
            Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How many cases each fuzz target runs: `HEADWISE_FUZZ_CASES`, else `default`.
pub fn fuzz_cases(default: usize) -> usize {
    std::env::var("HEADWISE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fuzz seed: `HEADWISE_FUZZ_SEED`, else a fixed one.
pub fn fuzz_seed() -> u64 {
    std::env::var("HEADWISE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_1905)
}

// ---------------------------------------------------------------------------------------------
// ONNX (protobuf)

/// A protobuf field: number, wire type, and its payload as stored (a varint's bytes, the 8 or 4
/// bytes of a fixed field, or a length-delimited field's content).
pub type ProtoField = (u64, u8, Vec<u8>);

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The fields of a protobuf message (a fixture; panics on malformed input).
pub fn proto_fields(bytes: &[u8]) -> Vec<ProtoField> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at).expect("field key");
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let start = at;
        let payload = match wire {
            0 => {
                read_varint(bytes, &mut at).expect("varint");
                bytes[start..at].to_vec()
            }
            1 => {
                at += 8;
                bytes[start..at].to_vec()
            }
            5 => {
                at += 4;
                bytes[start..at].to_vec()
            }
            2 => {
                let len = read_varint(bytes, &mut at).expect("length") as usize;
                let content = bytes[at..at + len].to_vec();
                at += len;
                content
            }
            other => panic!("wire type {other}"),
        };
        fields.push((number, wire, payload));
    }
    fields
}

/// A protobuf message from its fields.
pub fn proto_bytes(fields: &[ProtoField]) -> Vec<u8> {
    let mut out = Vec::new();
    for (number, wire, payload) in fields {
        put_varint(&mut out, number << 3 | u64::from(*wire));
        if *wire == 2 {
            put_varint(&mut out, payload.len() as u64);
        }
        out.extend_from_slice(payload);
    }
    out
}

/// An ONNX model whose first initializer with a name ending in `suffix` has `dims` instead
/// (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.dims = 1, .name = 8). Returns
/// the new file and the initializer's full name.
pub fn onnx_with_dims(model: &[u8], suffix: &str, dims: &[u64]) -> (Vec<u8>, String) {
    let mut fields = proto_fields(model);
    let graph = fields.iter_mut().find(|f| f.0 == 7).expect("a graph");
    let mut graph_fields = proto_fields(&graph.2);
    let mut found = None;
    for init in graph_fields.iter_mut().filter(|f| f.0 == 5) {
        let tensor = proto_fields(&init.2);
        let name = tensor
            .iter()
            .find(|f| f.0 == 8)
            .map(|f| String::from_utf8_lossy(&f.2).into_owned())
            .unwrap_or_default();
        if !name.ends_with(suffix) {
            continue;
        }
        let mut edited: Vec<ProtoField> = dims
            .iter()
            .map(|&d| {
                let mut v = Vec::new();
                put_varint(&mut v, d);
                (1, 0, v)
            })
            .collect();
        edited.extend(tensor.into_iter().filter(|f| f.0 != 1));
        init.2 = proto_bytes(&edited);
        found = Some(name);
        break;
    }
    let name = found.unwrap_or_else(|| panic!("no initializer named …{suffix}"));
    graph.2 = proto_bytes(&graph_fields);
    (proto_bytes(&fields), name)
}

/// The names of an ONNX model's initializers.
pub fn onnx_initializers(model: &[u8]) -> Vec<String> {
    let fields = proto_fields(model);
    let graph = fields.iter().find(|f| f.0 == 7).expect("a graph");
    proto_fields(&graph.2)
        .iter()
        .filter(|f| f.0 == 5)
        .filter_map(|init| {
            proto_fields(&init.2)
                .iter()
                .find(|f| f.0 == 8)
                .map(|f| String::from_utf8_lossy(&f.2).into_owned())
        })
        .collect()
}
