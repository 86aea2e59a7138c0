//! Weights from an ONNX graph exported from a Hugging Face vision transformer.
//!
//! Exporters keep most parameters under their PyTorch names (`backbone.encoder.layer.0.norm1.weight`)
//! but turn linear weights into anonymous `onnx::MatMul_*` initializers stored [in, out], and may
//! constant-fold the position embeddings into pieces. This file names every weight the way the
//! checkpoint would: a MatMul weight after the node that multiplies by it
//! (`/backbone/encoder/layer.0/attention/attention/query/MatMul` → `…query.weight`), and the
//! position embeddings from the CLS part and patch part that feed the embeddings' Concat and
//! Reshape nodes. It also reads what the weights cannot say (the number of heads) from the graph.

use super::weights::WeightSource;
use crate::error::{EngineError, Result};
use crate::host::HostTensor;
use half::{bf16, f16};
use prost::Message;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

// The parts of onnx.proto that carry weights and node names; prost skips every other field.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;
const EXTERNAL: i32 = 1;

impl TensorProto {
    fn shape(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| d.max(0) as usize).collect()
    }

    fn floats(&self) -> std::result::Result<Vec<f32>, String> {
        if self.data_location == EXTERNAL {
            return Err("stored in an external data file, which is not supported".into());
        }
        let raw = &self.raw_data;
        let values: Vec<f32> = match self.data_type {
            FLOAT if !raw.is_empty() => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            FLOAT => self.float_data.clone(),
            DOUBLE if !raw.is_empty() => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
                .collect(),
            DOUBLE => self.double_data.iter().map(|&v| v as f32).collect(),
            FLOAT16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            BFLOAT16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(format!("data type {other} is not a float type")),
        };
        // Checked: dims read from the file may multiply past 64 bits.
        let expected = self
            .shape()
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(values.len()) {
            return Err(format!(
                "{} values for shape {:?} (truncated?)",
                values.len(),
                self.shape()
            ));
        }
        Ok(values)
    }

    fn ints(&self) -> Vec<i64> {
        if self.data_type != INT64 {
            return Vec::new();
        }
        if self.raw_data.is_empty() {
            return self.int64_data.clone();
        }
        self.raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect()
    }
}

/// An ONNX file's weights under Hugging Face names, with the encoder's prefix (`backbone.`,
/// `vit.` …) removed so that they read like a bare model's checkpoint.
pub struct OnnxWeights {
    path: PathBuf,
    tensors: BTreeMap<String, HostTensor>,
    /// (heads, head_dim) from the attention's reshape; -1 where the exporter let ONNX infer it.
    head_shape: Option<(i64, i64)>,
}

/// `/backbone/encoder/layer.0/attention/attention/query/MatMul` → `backbone.encoder.layer.0.attention.attention.query`
fn module_of(node_name: &str) -> Option<String> {
    let (module, _op) = node_name.trim_start_matches('/').rsplit_once('/')?;
    Some(module.replace('/', "."))
}

impl OnnxWeights {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        let not_vit = |reason: String| EngineError::NotAModel {
            path: path.to_path_buf(),
            reason,
        };
        let model = ModelProto::decode(bytes.as_slice()).map_err(|e| EngineError::BadWeights {
            path: path.to_path_buf(),
            reason: format!("not a valid ONNX file ({e})"),
        })?;
        let graph = model
            .graph
            .ok_or_else(|| not_vit("an ONNX file without a graph".into()))?;
        let bad_tensor = |name: &str, reason: String| EngineError::BadTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason,
        };
        let consumers: HashMap<&str, Vec<&NodeProto>> =
            graph.node.iter().fold(HashMap::new(), |mut map, node| {
                for input in &node.input {
                    map.entry(input.as_str()).or_default().push(node);
                }
                map
            });
        let mut named = BTreeMap::new();
        let mut position_parts: Vec<(String, usize, HostTensor)> = Vec::new();
        for init in &graph.initializer {
            let Ok(data) = init.floats() else {
                // Integer initializers are shapes and indices, not weights.
                if matches!(init.data_type, FLOAT | FLOAT16 | DOUBLE | BFLOAT16) {
                    return Err(bad_tensor(&init.name, init.floats().unwrap_err()));
                }
                continue;
            };
            let tensor = HostTensor::new(init.shape(), data);
            if !init.name.starts_with("onnx::") && init.name.contains('.') {
                named.insert(init.name.clone(), tensor);
                continue;
            }
            for node in consumers.get(init.name.as_str()).into_iter().flatten() {
                let Some(module) = module_of(&node.name) else {
                    continue;
                };
                match node.op_type.as_str() {
                    "MatMul"
                        if tensor.shape.len() == 2 && node.input.get(1) == Some(&init.name) =>
                    {
                        // Stored [in, out]; checkpoints hold nn.Linear's [out, in].
                        named.insert(format!("{module}.weight"), tensor.transposed());
                    }
                    "Concat" | "Reshape" if module.ends_with("embeddings") => {
                        let order = if node.op_type == "Concat" { 0 } else { 1 };
                        position_parts.push((module.clone(), order, tensor.clone()));
                    }
                    _ => {}
                }
            }
        }
        let cls_name = named
            .keys()
            .find(|k| k.ends_with("embeddings.cls_token"))
            .cloned()
            .ok_or_else(|| {
                not_vit(
                    "this ONNX graph is not an exported ViT: it has no embeddings.cls_token \
                     initializer"
                        .into(),
                )
            })?;
        let prefix = cls_name
            .trim_end_matches("embeddings.cls_token")
            .to_string();
        let positions = format!("{prefix}embeddings.position_embeddings");
        if !named.contains_key(&positions) && !position_parts.is_empty() {
            // The CLS position (the Concat's constant) comes first, then the patch grid.
            position_parts.sort_by_key(|(_, order, _)| *order);
            let hidden = *position_parts[0].2.shape.last().unwrap_or(&0);
            let data: Vec<f32> = position_parts
                .iter()
                .flat_map(|(_, _, t)| t.data.iter().copied())
                .collect();
            let n = data.len() / hidden.max(1);
            named.insert(positions, HostTensor::new(vec![1, n, hidden], data));
        }
        // Keep the encoder (prefix removed) and root-level heads such as `classifier`; drop
        // other modules of the graph (a saliency decoder, say).
        let dinov2 = named.keys().any(|k| k.contains("layer_scale1"));
        let mut tensors = BTreeMap::new();
        for (name, tensor) in named {
            if let Some(rest) = name.strip_prefix(&prefix) {
                tensors.insert(checkpoint_name(rest, dinov2), tensor);
            } else if prefix.is_empty() || name.contains("classifier") {
                tensors.insert(checkpoint_name(&name, dinov2), tensor);
            }
        }
        let node_prefix = format!("/{}", prefix.replace('.', "/"));
        let head_shape = head_shape_from_graph(&graph, &node_prefix);
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            head_shape,
        })
    }

    /// A Hugging Face config.json for the graph, from its weights' shapes and the head count in
    /// its reshapes. Settings the graph does not show take the model type's defaults.
    pub fn infer_config(&self) -> Result<Value> {
        let bad = |reason: String| EngineError::BadConfig {
            path: self.path.clone(),
            reason,
        };
        let shape = |name: &str| self.tensors.get(name).map(|t| t.shape.clone());
        let model_type = if self.contains("encoder.layer.0.layer_scale1.lambda1") {
            if self.contains("embeddings.register_tokens") {
                "dinov2_with_registers"
            } else {
                "dinov2"
            }
        } else if self.contains("embeddings.distillation_token") {
            "deit"
        } else {
            "vit"
        };
        let conv = shape("embeddings.patch_embeddings.projection.weight")
            .filter(|s| s.len() == 4)
            .ok_or_else(|| bad("no 4-D patch_embeddings.projection.weight".into()))?;
        let hidden = conv[0];
        let layers = (0..)
            .take_while(|i| {
                self.tensors
                    .keys()
                    .any(|k| k.starts_with(&format!("encoder.layer.{i}.")))
            })
            .count();
        let fc1 = if model_type.starts_with("dinov2") {
            "encoder.layer.0.mlp.fc1.weight"
        } else {
            "encoder.layer.0.intermediate.dense.weight"
        };
        let intermediate = shape(fc1)
            .map(|s| s[0])
            .ok_or_else(|| bad(format!("no {fc1}")))?;
        let heads = match self.head_shape {
            Some((heads, _)) if heads > 0 => Some(heads as usize),
            Some((_, head_dim)) if head_dim > 0 && hidden % head_dim as usize == 0 => {
                Some(hidden / head_dim as usize)
            }
            _ => None,
        };
        let heads = heads.ok_or_else(|| {
            bad(
                "cannot tell the number of attention heads from the graph; put the model's \
                 config.json beside the .onnx file"
                    .into(),
            )
        })?;
        let positions = shape("embeddings.position_embeddings")
            .ok_or_else(|| bad("no position embeddings".into()))?;
        let prefix = 1 + usize::from(model_type == "deit");
        let grid = ((positions[1].saturating_sub(prefix)) as f64)
            .sqrt()
            .round() as usize;
        let registers = shape("embeddings.register_tokens").map_or(0, |s| s[1]);
        Ok(json!({
            "model_type": model_type,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "mlp_ratio": intermediate / hidden.max(1),
            "num_channels": conv[1],
            "patch_size": conv[2],
            "image_size": grid * conv[2],
            "num_register_tokens": registers,
            "hidden_act": "gelu",
        }))
    }

    /// Writes the weights as a `model.safetensors` checkpoint (for turning a graph into a model
    /// folder).
    pub fn save_safetensors(&self, out: &Path) -> Result<()> {
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), t.shape.clone(), bytes)
            })
            .collect();
        let views = owned
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| EngineError::BadTensor {
                        path: self.path.clone(),
                        name: name.clone(),
                        reason: format!("{e:?}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        crate::atomic_file::write_atomically(
            out,
            |tmp| {
                safetensors::serialize_to_file(views, None, tmp).map_err(|e| {
                    EngineError::BadWeights {
                        path: out.to_path_buf(),
                        reason: format!("writing: {e:?}"),
                    }
                })
            },
            |e| EngineError::io(out, e),
        )
    }
}

/// Graphs exported from transformers 5 carry its module names (`layers.0.attention.q_proj`);
/// checkpoints, and so the architectures here, use the classic ones
/// (`encoder.layer.0.attention.attention.query`).
fn checkpoint_name(name: &str, dinov2: bool) -> String {
    let mut name = name.to_string();
    if let Some(rest) = name.strip_prefix("layers.") {
        name = format!("encoder.layer.{rest}");
    }
    let mut renames = vec![
        (".attention.q_proj.", ".attention.attention.query."),
        (".attention.k_proj.", ".attention.attention.key."),
        (".attention.v_proj.", ".attention.attention.value."),
        (".attention.o_proj.", ".attention.output.dense."),
    ];
    if !dinov2 {
        renames.push((".mlp.fc1.", ".intermediate.dense."));
        renames.push((".mlp.fc2.", ".output.dense."));
    }
    for (from, to) in renames {
        name = name.replace(from, to);
    }
    name
}

/// The first layer's attention reshapes a projection to [batch, tokens, heads, head_dim], taking
/// the last two from Constant nodes (one of them may be -1, for ONNX to infer).
fn head_shape_from_graph(graph: &GraphProto, node_prefix: &str) -> Option<(i64, i64)> {
    let attention = [
        format!("{node_prefix}encoder/layer.0/attention/"),
        format!("{node_prefix}layers.0/attention/"),
    ];
    let constants: HashMap<&str, i64> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .filter_map(|n| {
            let value = n.attribute.iter().find(|a| a.name == "value")?.t.as_ref()?;
            match value.ints()[..] {
                [one] => Some((n.output.first()?.as_str(), one)),
                _ => None,
            }
        })
        .collect();
    let produced_by: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Reshape" && attention.iter().any(|a| n.name.starts_with(a)))
        .find_map(|reshape| {
            let concat = produced_by.get(reshape.input.get(1)?.as_str())?;
            let dims: Vec<i64> = concat
                .input
                .iter()
                .filter_map(|i| constants.get(i.as_str()).copied())
                .collect();
            // The last two known dimensions are heads and head_dim.
            (dims.len() >= 2 && concat.input.len() == 4)
                .then(|| (dims[dims.len() - 2], dims[dims.len() - 1]))
        })
}

impl WeightSource for OnnxWeights {
    fn path(&self) -> &Path {
        &self.path
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::Missing {
                path: self.path.clone(),
                what: format!("weight {name}"),
            })
    }
}
