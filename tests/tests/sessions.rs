//! The session file: what it holds, that it round-trips, and that bad files are clear errors.

use headwise_engine::device::DeviceChoice;
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::{EngineError, TokenInput};
use headwise_tests::*;
use std::path::Path;

fn traced_session() -> Session {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let mut session = Session::new(&model, "tiny-llama");
    for (i, text) in ["Paris is the capital", "of France."].iter().enumerate() {
        let encoded = model.encode(i, text, Default::default()).unwrap();
        let trace = model.forward(&TokenInput::from(&encoded)).unwrap();
        session.push_text(&model, text, &encoded, &trace).unwrap();
    }
    session.meta.view = serde_json::json!({"tab": "head", "layer": 1, "head": 3});
    session
}

#[test]
fn session_round_trips_tensors_metadata_and_view_exactly_in_f32() {
    let dir = scratch("session-f32");
    let path = dir.join("s.safetensors");
    let session = traced_session();
    session.save(&path, StoreDtype::F32).unwrap();
    let reopened = Session::open(&path).unwrap();
    assert_eq!(reopened, session);
}

/// Opening reads an f32 session's tensors straight from the mapped file instead of copying
/// them; what a caller sees is the same, and saving over the open file leaves it intact.
#[test]
fn an_f32_session_opens_its_tensors_in_place_and_can_be_saved_over_itself() {
    let dir = scratch("session-in-place");
    let path = dir.join("s.safetensors");
    let session = traced_session();
    session.save(&path, StoreDtype::F32).unwrap();
    let mut reopened = Session::open(&path).unwrap();
    let tensors = reopened
        .layers
        .iter()
        .flatten()
        .flat_map(|l| [l.full(), &l.q, &l.k]);
    assert!(
        tensors.clone().all(|t| t.data.is_mapped()),
        "every tensor read in place"
    );
    assert_eq!(tensors.count(), 2 * 2 * 3);
    assert_eq!(reopened, session);
    reopened.meta.view = serde_json::json!({"tab": "overview"});
    reopened.save(&path, StoreDtype::F32).unwrap();
    assert_eq!(
        reopened.layers, session.layers,
        "the old mapping still reads"
    );
    let again = Session::open(&path).unwrap();
    assert_eq!(again.layers, session.layers);
    assert_eq!(again.meta.view, serde_json::json!({"tab": "overview"}));
    // A write to a mapped tensor copies it first; the file is untouched.
    let mut edited = again.clone();
    edited.layers[0][0].attn.as_mut().unwrap().data[0] = 42.0;
    assert!(!edited.layers[0][0].full().data.is_mapped());
    assert_eq!(Session::open(&path).unwrap().layers, session.layers);
}

#[test]
fn session_file_has_the_documented_names_shapes_and_metadata() {
    let dir = scratch("session-layout");
    let path = dir.join("s.safetensors");
    traced_session().save(&path, StoreDtype::F32).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["headwise"]).unwrap();
    assert_eq!(meta["format_version"], 2);
    assert_eq!(meta["model"]["type"], "llama");
    assert_eq!(meta["model"]["heads"], 4);
    assert_eq!(meta["model"]["kv_heads"], 2);
    assert_eq!(meta["model"]["head_dim"], 8);
    assert_eq!(meta["inputs"][0]["kind"], "text");
    let t = meta["inputs"][0]["token_ids"].as_array().unwrap().len();
    assert!(t >= 2, "BOS plus at least one token");
    assert_eq!(meta["inputs"][0]["tokens"].as_array().unwrap().len(), t);
    assert_eq!(st.tensor("attn/0/1").unwrap().shape(), &[4, t, t]);
    assert_eq!(st.tensor("q/0/1").unwrap().shape(), &[4, t, 8]);
    assert_eq!(st.tensor("k/0/1").unwrap().shape(), &[2, t, 8]);
    assert_eq!(
        st.tensor("attn/1/0").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    assert_eq!(
        meta["inputs"][0]["next_tokens"].as_array().unwrap().len(),
        5
    );
    let lse = st.tensor("lse/0/1").unwrap();
    assert_eq!(
        (lse.dtype(), lse.shape()),
        (safetensors::Dtype::F32, &[4, t][..])
    );
    let attention = meta["model"]["attention"].as_array().unwrap();
    assert_eq!(attention.len(), 2, "one object per layer");
    let scale = attention[1]["scale"].as_f64().unwrap();
    assert!((scale - 1.0 / 8f64.sqrt()).abs() < 1e-7, "scale {scale}");
    assert_eq!(
        (
            &attention[1]["softcap"],
            &attention[1]["window"],
            &attention[1]["rope"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!(true)
        )
    );
}

/// DESIGN.md: any attention weight is exp(z_ij − lse_i), z = softcap(scale·q·k) + mask; here
/// rebuilt from the stored q, k, lse and model.attention alone.
#[test]
fn stored_attention_is_exp_of_the_logits_minus_the_stored_lse() {
    let session = traced_session();
    let m = &session.meta.model;
    let group = m.heads / m.kv_heads;
    for (i, input) in session.layers.iter().enumerate() {
        for (l, layer) in input.iter().enumerate() {
            let lse = session.lse(i, l).expect("format 2 stores lse");
            let attention = session.layer_attention(l);
            let t = layer.q.shape[1];
            let d = m.head_dim;
            for h in 0..m.heads {
                for qi in 0..t {
                    for kj in 0..=qi {
                        let q = &layer.q.data[(h * t + qi) * d..][..d];
                        let k = &layer.k.data[((h / group) * t + kj) * d..][..d];
                        let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                        let rebuilt = (attention.logit(dot) - lse[h * t + qi]).exp();
                        let stored = layer.full().data[(h * t + qi) * t + kj];
                        assert!(
                            (rebuilt - stored).abs() < 1e-5,
                            "input {i} layer {l} head {h} ({qi}, {kj}): {rebuilt} vs {stored}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn f16_session_stores_half_precision_within_its_resolution() {
    let dir = scratch("session-f16");
    let path = dir.join("s.safetensors");
    let session = traced_session();
    session.save(&path, StoreDtype::F16).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("attn/0/0").unwrap().dtype(),
        safetensors::Dtype::F16
    );
    let reopened = Session::open(&path).unwrap();
    for (a, b) in reopened.layers[0].iter().zip(&session.layers[0]) {
        assert_close("attn f16", a.full(), b.full(), 1e-3);
    }
}

#[test]
fn saving_leaves_no_temporary_file_and_a_failed_save_creates_nothing() {
    let dir = scratch("session-atomic");
    let session = traced_session();
    session
        .save(&dir.join("s.safetensors"), StoreDtype::F32)
        .unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("s.safetensors")]);
    let missing_dir = dir.join("no-such-dir").join("s.safetensors");
    assert!(session.save(&missing_dir, StoreDtype::F32).is_err());
    assert!(!dir.join("no-such-dir").exists());
}

fn open_error(bytes: &[u8]) -> String {
    let err = Session::from_bytes(bytes, Path::new("broken.safetensors")).unwrap_err();
    assert!(matches!(err, EngineError::BadSession { .. }));
    let message = err.to_string();
    assert!(message.contains("broken.safetensors"), "{message}");
    message
}

#[test]
fn truncated_session_is_a_clear_error() {
    let dir = scratch("session-truncated");
    let path = dir.join("s.safetensors");
    traced_session().save(&path, StoreDtype::F32).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        let message = open_error(&bytes[..cut]);
        assert!(message.contains("truncated or corrupt"), "{message}");
    }
}

/// A session file whose metadata `edit` changed. `name` keeps each test's scratch folder its own
/// (tests run in parallel in one process).
fn rewrite_metadata(name: &str, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let dir = scratch(name);
    let path = dir.join("s.safetensors");
    let session = traced_session();
    session.save(&path, StoreDtype::F32).unwrap();
    let mut meta = serde_json::to_value(&session.meta).unwrap();
    edit(&mut meta);
    // Write through safetensors directly so any metadata (even an invalid one) can be stored.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<_> = st.tensors();
    let metadata = std::collections::HashMap::from([("headwise".to_string(), meta.to_string())]);
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}

#[test]
fn session_from_a_newer_headwise_is_refused_with_its_version() {
    let bytes = rewrite_metadata("session-newer", |m| {
        m["format_version"] = serde_json::json!(99)
    });
    let message = open_error(&bytes);
    assert!(
        message.contains("newer headwise") && message.contains("99"),
        "{message}"
    );
}

/// A session as headwise wrote it before format 2: no lse tensors, no model.attention.
fn format_1_bytes(name: &str) -> Vec<u8> {
    let dir = scratch(name);
    let path = dir.join("s.safetensors");
    let session = traced_session();
    session.save(&path, StoreDtype::F32).unwrap();
    let mut meta = serde_json::to_value(&session.meta).unwrap();
    meta["format_version"] = serde_json::json!(1);
    meta["model"].as_object_mut().unwrap().remove("attention");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("lse/"))
        .collect();
    let metadata = std::collections::HashMap::from([("headwise".to_string(), meta.to_string())]);
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}

#[test]
fn a_format_1_session_still_opens_with_the_plain_scaled_dot_product() {
    let bytes = format_1_bytes("session-format-1");
    let opened = Session::from_bytes(&bytes, Path::new("old.safetensors")).unwrap();
    let traced = traced_session();
    assert_eq!(opened.meta.format_version, 1);
    assert_eq!(opened.layers, traced.layers);
    assert!(opened.meta.model.attention.is_empty());
    assert_eq!(opened.lse(0, 0), None);
    let attention = opened.layer_attention(1);
    assert_eq!(attention.scale, 1.0 / 8f32.sqrt());
    assert_eq!((attention.softcap, attention.window), (None, None));
}

#[test]
fn session_whose_lse_shape_disagrees_with_metadata_is_refused() {
    let dir = scratch("session-lse-shape");
    let path = dir.join("s.safetensors");
    let mut session = traced_session();
    let lse = session.extras.get_mut("lse/1/0").unwrap();
    lse.shape = vec![1, lse.shape[0] * lse.shape[1]];
    session.save(&path, StoreDtype::F32).unwrap();
    let message = Session::open(&path).unwrap_err().to_string();
    assert!(message.contains("lse/1/0"), "{message}");
}

#[test]
fn session_whose_attention_list_has_the_wrong_length_is_refused() {
    let bytes = rewrite_metadata("session-attention-length", |m| {
        m["model"]["attention"].as_array_mut().unwrap().pop();
    });
    let message = open_error(&bytes);
    assert!(message.contains("model.attention"), "{message}");
}

#[test]
fn session_whose_tensor_shape_disagrees_with_metadata_is_refused() {
    let bytes = rewrite_metadata("session-shape", |m| {
        m["model"]["heads"] = serde_json::json!(3)
    });
    let message = open_error(&bytes);
    assert!(message.contains("shape"), "{message}");
}

#[test]
fn safetensors_file_without_headwise_metadata_is_not_a_session() {
    let bytes = std::fs::read(fixture("tiny-bert").join("model.safetensors")).unwrap();
    let message = open_error(&bytes);
    assert!(message.contains("not a headwise session"), "{message}");
}
