//! Today's encoders: tiny random RoBERTa, XLM-RoBERTa, DistilBERT and ModernBERT checkpoints
//! (scripts/make_encoder_fixtures.py) give the token ids, attention, queries and keys that
//! transformers computes, alone and in a right-padded batch; and the config keys these families
//! add that headwise does not implement are refused by name.

use headwise_engine::TokenInput;
use headwise_engine::device::DeviceChoice;
use headwise_engine::host::HostTensor;
use headwise_engine::model::Model;
use headwise_engine::model::bert::{Flavor, sinusoidal_table};
use headwise_engine::model::config::ModelConfig;
use headwise_engine::session::LayerTensors;
use headwise_tests::*;
use serde_json::{Value, json};
use std::path::Path;

const TOL: f32 = 1e-5;
/// q and k are unnormalised (|q| up to ~8 in the ModernBERT fixture), and transformers' own f32
/// q after three layers is 5e-6 from its float64 run; ours on wgpu (lavapipe) differs from
/// transformers by up to 2.4e-5 there (k near 1.5 in the third layer): a bound of 1e-5 plus 4e-6
/// of the tensor's scale leaves room for both sides' rounding, far below any modelling error.
const TOLERANCE: Tolerance = Tolerance {
    attn: TOL,
    qk_atol: TOL,
    qk_rtol: 4e-6,
    probs: TOL,
};
const FAMILIES: [&str; 4] = [
    "tiny-roberta",
    "tiny-xlm-roberta",
    "tiny-distilbert",
    "tiny-modernbert",
];

fn check(name: &str, device: DeviceChoice) -> Model {
    let folder = fixture(name);
    let model = load(&folder, device);
    let expected = Expected::load(&folder);
    check_against_transformers_with(&model, &expected, TOLERANCE);
    check_padded(&model, &expected);
    model
}

/// The fixture's right-padded row: the short prompt, pad tokens after it, their keys masked.
fn check_padded(model: &Model, expected: &Expected) {
    let list = |key: &str| -> Vec<u64> {
        expected.meta[key]
            .as_array()
            .unwrap_or_else(|| panic!("fixture has {key}"))
            .iter()
            .map(|v| v.as_u64().expect("an integer"))
            .collect()
    };
    let ids: Vec<u32> = list("padded_ids").into_iter().map(|i| i as u32).collect();
    let valid: Vec<bool> = list("padded_mask").into_iter().map(|m| m == 1).collect();
    assert!(valid.contains(&false), "the fixture has padding");
    let input = TokenInput {
        type_ids: vec![0; ids.len()],
        ids,
        key_valid: Some(valid),
    };
    let trace = model.forward(&input).expect("forward");
    for (l, layer) in trace.layers.iter().enumerate() {
        let ours = LayerTensors::from_trace(layer).expect("read back");
        let key = format!("padded_attn/{l}");
        assert_close(&key, ours.full(), expected.get(&key), TOLERANCE.attn);
        for (kind, t) in [("q", &ours.q), ("k", &ours.k)] {
            let key = format!("padded_{kind}/{l}");
            let (atol, rtol) = (TOLERANCE.qk_atol, TOLERANCE.qk_rtol);
            assert_allclose(&key, t, expected.get(&key), atol, rtol);
        }
    }
}

#[test]
fn tiny_roberta_offsets_positions_by_the_padding_index_as_transformers_does() {
    let model = check("tiny-roberta", DeviceChoice::Cpu);
    let encoder = model.config.encoder.as_ref().expect("encoder options");
    assert_eq!(encoder.flavor, Flavor::Roberta);
    assert_eq!(encoder.padding_idx, Some(1));
    // 64 position embeddings, the first two taken by the padding offset.
    assert_eq!(model.config.max_positions, 62);
}

#[test]
fn tiny_xlm_roberta_with_a_unigram_tokenizer_matches_transformers() {
    let model = check("tiny-xlm-roberta", DeviceChoice::Cpu);
    assert_eq!(
        model.config.encoder.as_ref().unwrap().flavor,
        Flavor::Roberta
    );
}

#[test]
fn tiny_distilbert_with_its_own_names_and_sinusoidal_positions_matches_transformers() {
    let model = check("tiny-distilbert", DeviceChoice::Cpu);
    let encoder = model.config.encoder.as_ref().unwrap();
    assert_eq!(encoder.flavor, Flavor::DistilBert);
    assert!(encoder.sinusoidal_positions);
    assert_eq!((model.config.hidden, model.config.heads), (32, 4));
    assert_eq!((model.config.layers, model.config.intermediate), (2, 64));
    assert_eq!(model.config.norm_eps, 1e-12);
}

#[test]
fn encoders_match_transformers_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    for name in FAMILIES {
        check(name, DeviceChoice::Gpu);
    }
}

/// All tensors of a safetensors file but `drop`, written to `to`.
fn copy_weights_without(from: &Path, to: &Path, drop: &str) {
    let bytes = std::fs::read(from).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != drop)
        .collect();
    assert!(kept.len() + 1 == st.len(), "{drop} was in the file");
    safetensors::serialize_to_file(kept, None, to).unwrap();
}

#[test]
fn distilbert_sinusoids_are_transformers_own_and_stand_in_for_a_missing_table() {
    let folder = fixture("tiny-distilbert");
    let expected = Expected::load(&folder);
    // The checkpoint holds the table transformers' create_sinusoidal_embeddings made.
    let bytes = std::fs::read(folder.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("embeddings.position_embeddings.weight").unwrap();
    let stored = HostTensor::new(
        view.shape().to_vec(),
        headwise_engine::model::safetensors_file::decode_floats(view.dtype(), view.data()).unwrap(),
    );
    assert_close("sinusoidal table", &sinusoidal_table(64, 32), &stored, 1e-7);
    // Without it, the computed table gives transformers' attention.
    let dir = scratch("distilbert-no-table");
    copy_dir(&folder, &dir);
    copy_weights_without(
        &folder.join("model.safetensors"),
        &dir.join("model.safetensors"),
        "embeddings.position_embeddings.weight",
    );
    check_against_transformers(&load(&dir, DeviceChoice::Cpu), &expected, TOL);
}

#[test]
fn a_prompt_longer_than_robertas_usable_positions_is_refused() {
    let model = load(&fixture("tiny-roberta"), DeviceChoice::Cpu);
    let long = "fox ".repeat(100);
    let err = model
        .encode(0, &long, Default::default())
        .expect_err("too long");
    assert!(err.to_string().contains("62 positions"), "{err}");
}

/// The fixture's config.json with `changes` applied, parsed.
fn config_with(name: &str, changes: Value) -> Result<ModelConfig, String> {
    let path = fixture(name).join("config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (key, value) in changes.as_object().unwrap() {
        json[key] = value.clone();
    }
    ModelConfig::from_json(&json, &path).map_err(|e| e.to_string())
}

/// Asserts that the changed config is refused with a message naming the file and every needle.
fn assert_refused(name: &str, changes: Value, needles: &[&str]) {
    let err = config_with(name, changes).expect_err("refused");
    assert!(err.contains("config.json"), "names the file: {err}");
    for needle in needles {
        assert!(err.contains(needle), "'{needle}' in: {err}");
    }
}

#[test]
fn a_decoder_roberta_is_refused_by_name() {
    assert_refused(
        "tiny-roberta",
        json!({"is_decoder": true}),
        &["is_decoder", "true", "supported: false"],
    );
}

#[test]
fn roberta_with_cross_attention_is_refused_by_name() {
    assert_refused(
        "tiny-xlm-roberta",
        json!({"add_cross_attention": true}),
        &["add_cross_attention", "true"],
    );
}

#[test]
fn roberta_relative_position_embeddings_are_refused_by_name() {
    assert_refused(
        "tiny-roberta",
        json!({"position_embedding_type": "relative_key"}),
        &["position_embedding_type", "relative_key"],
    );
}

#[test]
fn a_roberta_pad_token_id_that_is_not_a_token_id_is_refused() {
    assert_refused(
        "tiny-roberta",
        json!({"pad_token_id": "one"}),
        &["pad_token_id", "one"],
    );
}

#[test]
fn a_distilbert_activation_headwise_lacks_is_refused_by_name() {
    assert_refused(
        "tiny-distilbert",
        json!({"activation": "mish"}),
        &["activation", "mish"],
    );
}

#[test]
fn a_roberta_pad_id_changes_where_positions_start() {
    // Position ids follow pad_token_id: with pad id 0, 64 - 1 tokens fit.
    let config = config_with("tiny-roberta", json!({"pad_token_id": 0})).unwrap();
    assert_eq!(config.encoder.unwrap().padding_idx, Some(0));
    assert_eq!(config.max_positions, 63);
}

#[test]
fn tiny_modernbert_with_local_and_global_layers_matches_transformers() {
    let model = check("tiny-modernbert", DeviceChoice::Cpu);
    let expected = Expected::load(&fixture("tiny-modernbert"));
    let options = model
        .config
        .modernbert
        .as_ref()
        .expect("ModernBERT options");
    let windows: Vec<Option<usize>> = options.layers.iter().map(|l| l.window).collect();
    // local_attention 6: three keys on each side, so a window of 4 counting the query itself.
    let window = expected.meta["window"].as_u64().unwrap() as usize;
    assert_eq!(windows, vec![None, Some(window), None]);
    let thetas: Vec<f64> = options.layers.iter().map(|l| l.rope_theta).collect();
    assert_eq!(thetas, vec![5000.0, 300.0, 5000.0]);
    // The prompts are longer than the window, so the local layer's mask is exercised.
    let shortest = expected.token_ids("token_ids").iter().map(Vec::len).min();
    assert!(shortest.unwrap() > 2 * window);
}

#[test]
fn modernbert_rope_scaling_is_refused_by_name() {
    assert_refused(
        "tiny-modernbert",
        json!({"rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0},
        }}),
        &[
            "rope_parameters.full_attention.rope_type",
            "linear",
            "default",
        ],
    );
}

#[test]
fn a_modernbert_layer_type_headwise_lacks_is_refused_by_name() {
    assert_refused(
        "tiny-modernbert",
        json!({"layer_types": ["full_attention", "chunked_attention", "full_attention"]}),
        &["layer_types", "chunked_attention", "sliding_attention"],
    );
}

#[test]
fn a_modernbert_activation_headwise_lacks_is_refused_by_name() {
    assert_refused(
        "tiny-modernbert",
        json!({"hidden_activation": "mish"}),
        &["mish"],
    );
}

#[test]
fn modernbert_layer_types_of_the_wrong_length_are_refused() {
    assert_refused(
        "tiny-modernbert",
        json!({"layer_types": ["full_attention"]}),
        &["layer_types", "3 layer types"],
    );
}
