//! Never silently wrong: a config.json key or GGUF metadata value that changes the forward pass
//! and is not implemented is an error naming the file, the key and its value (and what is
//! supported), never a model that loads and computes something else. Each case edits a working
//! tiny checkpoint (a copy in a scratch folder) so that the key under test is the only problem.

use headwise_engine::Model;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A copy of fixture `name` whose config.json `edit` changed, in its own scratch folder.
fn edited(name: &str, case: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let dir = scratch(&format!("refusal-{case}"));
    let folder = dir.join(name);
    copy_dir(&fixture(name), &folder);
    let path = folder.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    folder
}

/// The load error's message, checked to name the file (a folder's config.json) and every one of
/// `needles`.
fn refusal(path: &Path, needles: &[&str]) -> String {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    refusal_naming(path, &file, needles)
}

/// As [`refusal`], the message naming `file`.
fn refusal_naming(path: &Path, file: &Path, needles: &[&str]) -> String {
    let device = create_device(DeviceChoice::Cpu).unwrap();
    let message = match Model::load(path, &device.device, &|_| {}) {
        Ok(_) => panic!("{} loaded, but should be refused", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(&file.display().to_string()),
        "names the file {}: {message}",
        file.display()
    );
    for needle in needles {
        assert!(message.contains(needle), "names {needle:?}: {message}");
    }
    message
}

fn set(key: &'static str, value: Value) -> impl Fn(&mut Value) {
    move |c: &mut Value| c[key] = value.clone()
}

#[test]
fn an_unknown_rope_type_is_refused_with_the_supported_ones() {
    let folder = edited("tiny-llama", "rope-type", |c| {
        c["rope_parameters"] = json!({"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0});
    });
    refusal(&folder, &["rope_type", "yarn", "llama3", "linear"]);
}

#[test]
fn old_style_rope_scaling_is_read_and_refused_by_name_too() {
    let folder = edited("tiny-llama", "rope-scaling", |c| {
        c["rope_scaling"] = json!({"type": "ntk-by-parts", "factor": 2.0});
        c.as_object_mut().unwrap().remove("rope_parameters");
    });
    refusal(&folder, &["rope_scaling", "ntk-by-parts"]);
}

#[test]
fn llama3_scaling_without_its_frequency_factors_is_refused() {
    let folder = edited("tiny-llama3", "llama3-missing", |c| {
        c["rope_parameters"]
            .as_object_mut()
            .unwrap()
            .remove("low_freq_factor");
    });
    refusal(&folder, &["low_freq_factor", "llama3"]);
}

#[test]
fn an_unsupported_activation_is_refused() {
    let folder = edited("tiny-llama", "activation", set("hidden_act", json!("mish")));
    refusal(&folder, &["hidden_act", "mish", "silu"]);
}

#[test]
fn a_sliding_window_on_a_family_without_one_is_refused() {
    let folder = edited(
        "tiny-llama",
        "llama-window",
        set("sliding_window", json!(4)),
    );
    refusal(&folder, &["sliding_window", "4", "mistral"]);
}

#[test]
fn attention_soft_capping_is_refused_outside_the_families_that_have_it() {
    let folder = edited(
        "tiny-qwen3",
        "softcap",
        set("attn_logit_softcapping", json!(50.0)),
    );
    refusal(&folder, &["attn_logit_softcapping", "50"]);
}

#[test]
fn mixture_of_experts_keys_are_refused() {
    let folder = edited("tiny-mistral", "moe", set("num_local_experts", json!(8)));
    refusal(&folder, &["num_local_experts", "8", "mixture-of-experts"]);
    let folder = edited("tiny-qwen2", "moe-qwen", set("num_experts", json!(4)));
    refusal(&folder, &["num_experts", "4"]);
}

#[test]
fn nope_layers_are_refused_where_they_are_not_implemented() {
    let folder = edited("tiny-llama", "nope", set("no_rope_layers", json!([1, 0])));
    refusal(&folder, &["no_rope_layers", "smollm3"]);
}

#[test]
fn a_nope_list_of_the_wrong_length_is_refused() {
    let folder = edited(
        "tiny-smollm3",
        "nope-length",
        set("no_rope_layers", json!([1, 1, 0])),
    );
    refusal(&folder, &["no_rope_layers", "4 entries"]);
}

#[test]
fn partial_rotary_embeddings_are_refused_outside_phi3() {
    let folder = edited(
        "tiny-qwen2",
        "partial",
        set("partial_rotary_factor", json!(0.5)),
    );
    refusal(&folder, &["partial_rotary_factor", "0.5", "phi3"]);
}

#[test]
fn sliding_layers_without_a_window_in_effect_are_refused() {
    // Qwen's config drops the window unless use_sliding_window; transformers then fails on
    // sliding layers, and so does headwise, by name.
    let folder = edited("tiny-qwen2-window", "no-window", |c| {
        c["use_sliding_window"] = json!(false);
        c["layer_types"] = json!(["full_attention", "sliding_attention", "sliding_attention"]);
    });
    refusal(&folder, &["layer_types", "sliding_window"]);
}

#[test]
fn an_unknown_layer_type_is_refused() {
    let folder = edited(
        "tiny-qwen3",
        "layer-type",
        set(
            "layer_types",
            json!(["full_attention", "chunked_attention"]),
        ),
    );
    refusal(
        &folder,
        &["layer_types", "chunked_attention", "sliding_attention"],
    );
}

#[test]
fn longrope_factors_of_the_wrong_length_are_refused() {
    let folder = edited("tiny-phi3", "longrope", |c| {
        c["rope_parameters"]["short_factor"] = json!([1.0, 1.0]);
    });
    refusal(&folder, &["short_factor", "4 numbers"]);
}

#[test]
fn a_checkpoint_whose_weights_disagree_with_its_head_dim_is_refused_by_tensor() {
    let folder = edited("tiny-qwen3", "head-dim", set("head_dim", json!(8)));
    refusal_naming(
        &folder,
        &folder.join("model.safetensors"),
        &["q_proj", "shape"],
    );
}

/// OLMo 2 has no sliding window (transformers' Olmo2 ignores the key): a config asking for one
/// is refused rather than computed without it.
#[test]
fn a_sliding_window_on_olmo2_is_refused() {
    let folder = edited(
        "tiny-olmo2",
        "olmo2-window",
        set("sliding_window", json!(4)),
    );
    refusal(&folder, &["sliding_window", "4", "olmo2"]);
}

#[test]
fn an_olmo2_rope_type_not_implemented_is_refused_with_the_supported_ones() {
    let folder = edited("tiny-olmo2", "olmo2-yarn", |c| {
        c["rope_parameters"] = json!({"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0});
    });
    refusal(&folder, &["rope_type", "yarn", "llama3"]);
}

/// A GGUF file holding only metadata: enough for the config reader, which refuses before any
/// weight is read.
fn gguf_with(case: &str, extra: &[(&str, GgufValue)]) -> PathBuf {
    let mut kvs: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::Str("llama".into()),
        ),
        ("llama.block_count".into(), GgufValue::U32(2)),
        ("llama.context_length".into(), GgufValue::U32(64)),
        ("llama.embedding_length".into(), GgufValue::U32(32)),
        ("llama.feed_forward_length".into(), GgufValue::U32(64)),
        ("llama.attention.head_count".into(), GgufValue::U32(4)),
        ("llama.attention.head_count_kv".into(), GgufValue::U32(2)),
        ("llama.vocab_size".into(), GgufValue::U32(400)),
    ];
    kvs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((kvs.len() as u64).to_le_bytes());
    let string = |bytes: &mut Vec<u8>, s: &str| {
        bytes.extend((s.len() as u64).to_le_bytes());
        bytes.extend(s.as_bytes());
    };
    for (key, value) in &kvs {
        string(&mut bytes, key);
        match value {
            GgufValue::U32(v) => {
                bytes.extend(4u32.to_le_bytes());
                bytes.extend(v.to_le_bytes());
            }
            GgufValue::F32(v) => {
                bytes.extend(6u32.to_le_bytes());
                bytes.extend(v.to_le_bytes());
            }
            GgufValue::Str(v) => {
                bytes.extend(8u32.to_le_bytes());
                string(&mut bytes, v);
            }
        }
    }
    let path = scratch(&format!("refusal-gguf-{case}")).join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[derive(Clone)]
enum GgufValue {
    U32(u32),
    F32(f32),
    Str(String),
}

#[test]
fn gguf_yarn_rope_scaling_is_refused() {
    let path = gguf_with(
        "yarn",
        &[
            ("llama.rope.scaling.type", GgufValue::Str("yarn".into())),
            ("llama.rope.scaling.factor", GgufValue::F32(4.0)),
        ],
    );
    refusal(&path, &["llama.rope.scaling.type", "yarn", "linear"]);
}

#[test]
fn gguf_mixture_of_experts_is_refused() {
    let path = gguf_with("experts", &[("llama.expert_count", GgufValue::U32(8))]);
    refusal(&path, &["llama.expert_count", "8"]);
}

#[test]
fn gguf_sliding_window_on_llama_is_refused() {
    let path = gguf_with(
        "window",
        &[("llama.attention.sliding_window", GgufValue::U32(16))],
    );
    refusal(&path, &["llama.attention.sliding_window", "16"]);
}

#[test]
fn gguf_partial_rotary_embeddings_are_refused() {
    let path = gguf_with(
        "partial",
        &[("llama.rope.dimension_count", GgufValue::U32(4))],
    );
    refusal(&path, &["llama.rope.dimension_count", "4"]);
}

#[test]
fn gguf_soft_capping_is_refused() {
    let path = gguf_with(
        "softcap",
        &[("llama.attn_logit_softcapping", GgufValue::F32(50.0))],
    );
    refusal(&path, &["llama.attn_logit_softcapping", "50"]);
}

// GGUF files of the families transformers' GGUF loader reads: each case edits one of the tiny
// family files (scripts/make_fixtures.py, make_family_ggufs) so that the key under test is its
// only problem.

/// A copy of the GGUF fixture `file` edited by `edit`.
fn gguf_edited(
    file: &str,
    case: &str,
    edit: impl Fn(&mut headwise_tests::hostile::Gguf),
) -> PathBuf {
    let mut gguf = headwise_tests::hostile::Gguf::read(&fixture("tiny-gguf").join(file));
    edit(&mut gguf);
    let path = scratch(&format!("refusal-gguf-{case}")).join(file);
    gguf.write(&path);
    path
}

fn set_f32(key: &'static str, value: f32) -> impl Fn(&mut headwise_tests::hostile::Gguf) {
    move |g| g.set_raw(key, 6, value.to_le_bytes().to_vec())
}

fn set_u32(key: &'static str, value: u32) -> impl Fn(&mut headwise_tests::hostile::Gguf) {
    move |g| g.set_raw(key, 4, value.to_le_bytes().to_vec())
}

fn set_str(key: &'static str, value: &'static str) -> impl Fn(&mut headwise_tests::hostile::Gguf) {
    move |g| {
        let mut bytes = (value.len() as u64).to_le_bytes().to_vec();
        bytes.extend(value.as_bytes());
        g.set_raw(key, 8, bytes)
    }
}

#[test]
fn the_unedited_family_gguf_files_load() {
    for file in [
        "tiny-qwen3.F32.gguf",
        "tiny-phi3.F32.gguf",
        "tiny-gemma2.F32.gguf",
        "tiny-gemma3.F16.gguf",
    ] {
        let path = gguf_edited(file, "unedited", |_| {});
        let device = create_device(DeviceChoice::Cpu).unwrap();
        Model::load(&path, &device.device, &|_| {}).unwrap();
    }
}

/// transformers' GGUF loader does not read Phi-3's window; llama.cpp's converter writes it (a
/// Phi-3 mini's 2047). One that masks keys would be computed differently by the two.
#[test]
fn gguf_a_phi3_window_shorter_than_the_context_is_refused() {
    let path = gguf_edited(
        "tiny-phi3.F32.gguf",
        "phi3-window",
        set_u32("phi3.attention.sliding_window", 16),
    );
    refusal(
        &path,
        &["phi3.attention.sliding_window", "16", "context_length"],
    );
}

#[test]
fn gguf_a_phi3_window_as_long_as_the_context_loads() {
    let path = gguf_edited(
        "tiny-phi3.F32.gguf",
        "phi3-long-window",
        set_u32("phi3.attention.sliding_window", 64),
    );
    let device = create_device(DeviceChoice::Cpu).unwrap();
    let model = Model::load(&path, &device.device, &|_| {}).unwrap();
    assert!(model.layer_attention().iter().all(|a| a.window.is_none()));
}

#[test]
fn gguf_rope_scaling_on_qwen3_is_refused() {
    let path = gguf_edited("tiny-qwen3.F32.gguf", "qwen3-rope-scaling", |g| {
        set_str("qwen3.rope.scaling.type", "linear")(g);
        set_f32("qwen3.rope.scaling.factor", 4.0)(g);
    });
    refusal(&path, &["qwen3.rope.scaling.type", "linear", "none"]);
}

#[test]
fn gguf_a_key_the_reader_does_not_know_is_refused() {
    let path = gguf_edited(
        "tiny-qwen3.F32.gguf",
        "unknown-key",
        set_f32("qwen3.attention.scale", 0.125),
    );
    refusal(&path, &["qwen3.attention.scale", "0.125", "known"]);
}

#[test]
fn gguf_gemma2_soft_caps_other_than_transformers_defaults_are_refused() {
    for (key, value, default) in [
        ("gemma2.attn_logit_softcapping", 30.0, "50"),
        ("gemma2.final_logit_softcapping", 20.0, "30"),
    ] {
        let path = gguf_edited(
            "tiny-gemma2.F32.gguf",
            &format!("gemma2-{key}"),
            set_f32(key, value),
        );
        refusal(&path, &[key, &value.to_string(), default]);
    }
}

#[test]
fn gguf_soft_capping_on_gemma3_is_refused() {
    let path = gguf_edited(
        "tiny-gemma3.F16.gguf",
        "gemma3-softcap",
        set_f32("gemma3.final_logit_softcapping", 30.0),
    );
    refusal(&path, &["gemma3.final_logit_softcapping", "30"]);
}

/// Gemma 3's larger sizes scale the global RoPE linearly; llama.cpp writes it, transformers'
/// GGUF loader does not read it.
#[test]
fn gguf_linear_rope_scaling_on_gemma3_is_refused() {
    let path = gguf_edited("tiny-gemma3.F16.gguf", "gemma3-rope-scaling", |g| {
        set_str("gemma3.rope.scaling.type", "linear")(g);
        set_f32("gemma3.rope.scaling.factor", 8.0)(g);
    });
    refusal(&path, &["gemma3.rope.scaling.type", "linear"]);
}

#[test]
fn gguf_a_gemma3_local_rope_base_other_than_10000_is_refused() {
    let path = gguf_edited(
        "tiny-gemma3.F16.gguf",
        "gemma3-swa-base",
        set_f32("gemma3.rope.freq_base_swa", 1000.0),
    );
    refusal(&path, &["gemma3.rope.freq_base_swa", "1000", "10000"]);
}

#[test]
fn gguf_a_gemma_sliding_window_pattern_is_refused() {
    let path = gguf_edited(
        "tiny-gemma3.F16.gguf",
        "gemma3-pattern",
        set_u32("gemma3.attention.sliding_window_pattern", 2),
    );
    refusal(&path, &["gemma3.attention.sliding_window_pattern", "2"]);
}

/// No GGUF key carries Gemma's query_pre_attn_scalar: transformers assumes 256, llama.cpp the
/// head width; only heads of 256 agree.
#[test]
fn gguf_gemma_heads_other_than_256_wide_are_refused() {
    let path = gguf_edited("tiny-gemma2.F32.gguf", "gemma2-head-dim", |g| {
        set_u32("gemma2.attention.key_length", 128)(g);
        set_u32("gemma2.attention.value_length", 128)(g);
    });
    refusal(
        &path,
        &[
            "gemma2.attention.key_length",
            "128",
            "query_pre_attn_scalar",
        ],
    );
}

/// Phi-3's long-context RoPE factors are tensors in llama.cpp's files; transformers' loader
/// drops them (and would compute without the scaling).
#[test]
fn gguf_a_tensor_the_forward_pass_does_not_read_is_refused_by_name() {
    let path = gguf_edited("tiny-phi3.F32.gguf", "phi3-rope-factors", |g| {
        let factors: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        g.tensors
            .push(("rope_factors_long.weight".into(), vec![4], 0, factors));
    });
    refusal(&path, &["rope_factors_long.weight", "phi3"]);
}

/// transformers' Qwen3 has no q, k or v bias: it drops one that a file holds.
#[test]
fn gguf_a_bias_qwen3_does_not_have_is_refused_by_name() {
    let path = gguf_edited("tiny-qwen3.F32.gguf", "qwen3-bias", |g| {
        let bias = vec![0u8; 256 * 4];
        g.tensors
            .push(("blk.0.attn_q.bias".into(), vec![256], 0, bias));
    });
    refusal(&path, &["blk.0.attn_q.bias"]);
}
