//! The Gemma family (gemma, gemma2, gemma3_text, the text tower of a gemma3 folder) computes
//! what transformers computes, records how its logits follow from q and k, and refuses by name
//! every config value it does not compute. Fixtures: scripts/make_gemma_fixtures.py.

use headwise_engine::device::DeviceChoice;
use headwise_engine::model::config::{Activation, ModelConfig};
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::trace::LayerAttention;
use headwise_engine::{AttentionCapture, Model, TokenInput};
use headwise_tests::*;
use serde_json::{Value, json};
use std::path::Path;

const TOL: f32 = 1e-5;
const FIXTURES: [&str; 4] = [
    "tiny-gemma",
    "tiny-gemma2",
    "tiny-gemma3-text",
    "tiny-gemma3",
];

/// Tokens, attention, q, k, lse and next-token probabilities against transformers, and the
/// most likely next token the same as transformers'.
fn check(model: &Model, folder: &Path) {
    let expected = Expected::load(folder);
    check_against_transformers(model, &expected, TOL);
    for (p, prompt) in expected.prompts().iter().enumerate() {
        let encoded = model.encode(p, prompt, Default::default()).unwrap();
        let trace = model.forward(&TokenInput::from(&encoded)).unwrap();
        let reference = &expected.get(&format!("next_token_probs/{p}")).data;
        let top = (0..reference.len())
            .max_by(|&a, &b| reference[a].total_cmp(&reference[b]))
            .unwrap();
        assert_eq!(
            trace.top_next_tokens(1)[0].0 as usize,
            top,
            "top next token of prompt {p}"
        );
    }
}

fn config_of(name: &str) -> (Value, std::path::PathBuf) {
    let path = fixture(name).join("config.json");
    let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (json, path)
}

fn parse(json: &Value, path: &Path) -> headwise_engine::Result<ModelConfig> {
    ModelConfig::from_json(json, path)
}

#[test]
fn tiny_gemma2_with_soft_caps_and_sliding_layers_matches_transformers_on_cpu() {
    let folder = fixture("tiny-gemma2");
    let model = load(&folder, DeviceChoice::Cpu);
    let attention = model.layer_attention();
    let sliding = LayerAttention {
        scale: (24f64).powf(-0.5) as f32,
        softcap: Some(4.0),
        window: Some(4),
        rope: true,
    };
    let full = LayerAttention {
        window: None,
        ..sliding
    };
    assert_eq!(attention, vec![sliding, full, sliding]);
    let prompts = Expected::load(&folder).token_ids("token_ids");
    assert!(
        prompts.iter().all(|ids| ids.len() > 4),
        "prompts longer than the window"
    );
    check(&model, &folder);
}

#[test]
fn tiny_gemma3_text_with_qk_norms_and_two_rope_bases_matches_transformers_on_cpu() {
    let folder = fixture("tiny-gemma3-text");
    let model = load(&folder, DeviceChoice::Cpu);
    let windows: Vec<Option<usize>> = model.layer_attention().iter().map(|a| a.window).collect();
    assert_eq!(windows, vec![Some(3), Some(3), None, Some(3)]);
    assert!(
        model
            .layer_attention()
            .iter()
            .all(|a| a.softcap.is_none() && a.scale == (20f64).powf(-0.5) as f32 && a.rope)
    );
    let gemma = model.config.gemma.as_ref().unwrap();
    assert_eq!(
        (gemma.local_rope.theta, gemma.local_rope.factor),
        (10.0, 1.0)
    );
    assert_eq!(
        (gemma.global_rope.theta, gemma.global_rope.factor),
        (100.0, 2.0)
    );
    assert_eq!(gemma.final_softcap, Some(5.0));
    check(&model, &folder);
}

/// A gemma3 folder as Google publishes them: older config keys (`rope_local_base_freq`,
/// `rope_scaling`, `sliding_window_pattern`) under `text_config`, and the text weights under
/// `language_model.model.`; transformers reads the same layers from it.
#[test]
fn the_text_tower_of_a_gemma3_folder_matches_transformers_on_cpu() {
    let folder = fixture("tiny-gemma3");
    let model = load(&folder, DeviceChoice::Cpu);
    assert_eq!(model.config.model_type, "gemma3");
    let text = load(&fixture("tiny-gemma3-text"), DeviceChoice::Cpu);
    assert_eq!(model.layer_attention(), text.layer_attention());
    let (a, b) = (
        model.config.gemma.as_ref().unwrap(),
        text.config.gemma.as_ref().unwrap(),
    );
    assert_eq!((a.global_rope, a.local_rope), (b.global_rope, b.local_rope));
    assert_eq!(
        a.final_softcap, None,
        "Gemma3ForConditionalGeneration has none"
    );
    check(&model, &folder);
}

#[test]
fn tiny_gemma_1_with_attention_biases_matches_transformers_on_cpu() {
    let folder = fixture("tiny-gemma");
    let model = load(&folder, DeviceChoice::Cpu);
    assert!(model.config.attention_bias);
    assert_eq!(model.config.activation, Activation::GeluTanh);
    assert!(
        model
            .layer_attention()
            .iter()
            .all(|a| *a == LayerAttention::standard(16, true))
    );
    check(&model, &folder);
}

#[test]
fn tiny_gemmas_match_transformers_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    for name in FIXTURES {
        let folder = fixture(name);
        check(&load(&folder, DeviceChoice::Gpu), &folder);
    }
}

/// Packed passes (corpus runs) keep each input's windows inside its own block.
#[test]
fn packed_gemma_inputs_give_each_input_its_own_trace() {
    for name in ["tiny-gemma2", "tiny-gemma3-text"] {
        let folder = fixture(name);
        let model = load(&folder, DeviceChoice::Cpu);
        let expected = Expected::load(&folder);
        let inputs: Vec<TokenInput> = expected
            .prompts()
            .iter()
            .enumerate()
            .map(|(i, p)| TokenInput::from(&model.encode(i, p, Default::default()).unwrap()))
            .collect();
        let traces = model
            .forward_many(&inputs, 4096, AttentionCapture::Full, &mut |_| true)
            .unwrap();
        assert_eq!(traces.len(), inputs.len());
        for (p, trace) in traces.iter().enumerate() {
            for (l, layer) in trace.layers.iter().enumerate() {
                let ours = headwise_engine::session::LayerTensors::from_trace(layer).unwrap();
                let key = format!("attn/{p}/{l}");
                assert_close(
                    &format!("{name} packed {key}"),
                    ours.full(),
                    expected.get(&key),
                    TOL,
                );
                let key = format!("lse/{p}/{l}");
                assert_close(
                    &format!("{name} packed {key}"),
                    &lse_of(layer),
                    expected.get(&key),
                    TOL,
                );
            }
        }
    }
}

/// The session records each layer's scale, soft-cap, window and RoPE, and the stored attention
/// is exp(z − lse) with z rebuilt from the stored q and k by that record alone.
#[test]
fn a_gemma2_session_records_how_each_layers_logits_follow_from_q_and_k() {
    let model = load(&fixture("tiny-gemma2"), DeviceChoice::Cpu);
    let mut session = Session::new(&model, "tiny-gemma2");
    let text = "Paris is the capital of France, and the heads know it.";
    let encoded = model.encode(0, text, Default::default()).unwrap();
    let trace = model.forward(&TokenInput::from(&encoded)).unwrap();
    session.push_text(&model, text, &encoded, &trace).unwrap();
    let path = scratch("gemma-session").join("s.safetensors");
    session.save(&path, StoreDtype::F32).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["headwise"]).unwrap();
    let scale = (24f64).powf(-0.5) as f32;
    let recorded: Vec<(f32, Value, Value, Value)> = meta["model"]["attention"]
        .as_array()
        .expect("model.attention")
        .iter()
        .map(|a| {
            let scale = a["scale"].as_f64().expect("a number") as f32;
            (
                scale,
                a["softcap"].clone(),
                a["window"].clone(),
                a["rope"].clone(),
            )
        })
        .collect();
    let (cap, yes) = (json!(4.0), json!(true));
    assert_eq!(
        recorded,
        vec![
            (scale, cap.clone(), json!(4), yes.clone()),
            (scale, cap.clone(), Value::Null, yes.clone()),
            (scale, cap, json!(4), yes),
        ]
    );

    let session = Session::open(&path).unwrap();
    let m = &session.meta.model;
    let group = m.heads / m.kv_heads;
    let d = m.head_dim;
    let mut windowed_out = 0;
    for (l, layer) in session.layers[0].iter().enumerate() {
        let lse = session.lse(0, l).unwrap();
        let attention = session.layer_attention(l);
        let t = layer.q.shape[1];
        for h in 0..m.heads {
            for qi in 0..t {
                for kj in 0..t {
                    let stored = layer.full().data[(h * t + qi) * t + kj];
                    if kj > qi || !attention.in_window(qi, kj) {
                        assert_eq!(stored, 0.0, "layer {l} ({qi}, {kj}) is masked");
                        windowed_out += usize::from(kj <= qi);
                        continue;
                    }
                    let q = &layer.q.data[(h * t + qi) * d..][..d];
                    let k = &layer.k.data[((h / group) * t + kj) * d..][..d];
                    let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                    let rebuilt = (attention.logit(dot) - lse[h * t + qi]).exp();
                    assert!(
                        (rebuilt - stored).abs() < 1e-5,
                        "layer {l} head {h} ({qi}, {kj}): {rebuilt} vs {stored}"
                    );
                }
            }
        }
    }
    assert!(windowed_out > 0, "the window hid some past keys");
}

// ---- Reading config.json: transformers' defaults and legacy keys ----

#[test]
fn a_gemma2_config_without_layer_types_or_soft_caps_takes_transformers_defaults() {
    let (mut json, path) = config_of("tiny-gemma2");
    let o = json.as_object_mut().unwrap();
    for key in [
        "layer_types",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "rope_parameters",
    ] {
        o.remove(key);
    }
    o.insert("rope_theta".into(), json!(100.0));
    let config = parse(&json, &path).unwrap();
    let windows: Vec<_> = config.layer_attention.iter().map(|a| a.window).collect();
    assert_eq!(
        windows,
        vec![Some(4), None, Some(4)],
        "every other layer slides, from the first"
    );
    assert!(
        config
            .layer_attention
            .iter()
            .all(|a| a.softcap == Some(50.0))
    );
    assert_eq!(config.gemma.unwrap().final_softcap, Some(30.0));
    assert_eq!(config.rope_theta, 100.0);
}

#[test]
fn a_gemma3_text_config_without_layer_types_slides_all_but_every_sixth_layer() {
    let (mut json, path) = config_of("tiny-gemma3-text");
    let o = json.as_object_mut().unwrap();
    o.remove("layer_types");
    o.insert("num_hidden_layers".into(), json!(7));
    let config = parse(&json, &path).unwrap();
    let full: Vec<usize> = (0..7)
        .filter(|&l| config.layer_attention[l].window.is_none())
        .collect();
    assert_eq!(full, vec![5]);
    o_insert(&mut json, "sliding_window_pattern", json!(2));
    let config = parse(&json, &path).unwrap();
    let full: Vec<usize> = (0..7)
        .filter(|&l| config.layer_attention[l].window.is_none())
        .collect();
    assert_eq!(full, vec![1, 3, 5]);
}

fn o_insert(json: &mut Value, key: &str, value: Value) {
    json.as_object_mut().unwrap().insert(key.into(), value);
}

#[test]
fn gemma_1s_legacy_gelu_means_the_tanh_approximation_as_in_transformers() {
    let (mut json, path) = config_of("tiny-gemma");
    o_insert(&mut json, "hidden_act", json!("gelu"));
    assert_eq!(
        parse(&json, &path).unwrap().activation,
        Activation::GeluTanh
    );
    let (mut json, path) = config_of("tiny-gemma2");
    o_insert(&mut json, "hidden_activation", json!("gelu"));
    assert_eq!(parse(&json, &path).unwrap().activation, Activation::Gelu);
}

// ---- Refusals: each names the file, the key and its value ----

/// The error for `name`'s config after `edit`: it must name the file and every needle.
fn refusal(name: &str, edit: impl FnOnce(&mut Value), needles: &[&str]) {
    let (mut json, path) = config_of(name);
    edit(&mut json);
    let message = match parse(&json, &path) {
        Ok(_) => panic!("{name}: expected a refusal naming {needles:?}"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "lacks '{needle}': {message}");
    }
}

fn text_config(json: &mut Value) -> &mut Value {
    json.get_mut("text_config").unwrap()
}

#[test]
fn bidirectional_attention_is_refused() {
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "use_bidirectional_attention", json!(true)),
        &["use_bidirectional_attention = true"],
    );
    refusal(
        "tiny-gemma3",
        |j| o_insert(text_config(j), "use_bidirectional_attention", json!(true)),
        &["text_config.use_bidirectional_attention = true"],
    );
}

/// transformers keeps Gemma 3's `attn_logit_softcapping` but never applies it, and
/// Gemma3ForConditionalGeneration skips the final soft-cap: a value there is refused rather
/// than guessed.
#[test]
fn soft_caps_that_transformers_ignores_are_refused() {
    refusal(
        "tiny-gemma3-text",
        |j| o_insert(j, "attn_logit_softcapping", json!(50.0)),
        &["attn_logit_softcapping = 50.0", "does not apply"],
    );
    refusal(
        "tiny-gemma3",
        |j| o_insert(text_config(j), "final_logit_softcapping", json!(30.0)),
        &[
            "text_config.final_logit_softcapping = 30.0",
            "Gemma3ForConditionalGeneration",
        ],
    );
    for key in [
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "sliding_window",
    ] {
        refusal(
            "tiny-gemma",
            |j| o_insert(j, key, json!(16)),
            &[&format!("{key} = 16"), "Gemma 1"],
        );
    }
    refusal(
        "tiny-gemma",
        |j| o_insert(j, "query_pre_attn_scalar", json!(64)),
        &["query_pre_attn_scalar = 64"],
    );
}

#[test]
fn soft_caps_and_scales_that_are_not_positive_are_refused() {
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "attn_logit_softcapping", json!(0.0)),
        &["attn_logit_softcapping = 0.0", "positive"],
    );
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "final_logit_softcapping", json!(-3.0)),
        &["final_logit_softcapping = -3.0"],
    );
    refusal(
        "tiny-gemma3-text",
        |j| o_insert(j, "query_pre_attn_scalar", json!(0)),
        &["query_pre_attn_scalar = 0"],
    );
}

#[test]
fn rope_types_other_than_default_and_linear_are_refused() {
    refusal(
        "tiny-gemma3-text",
        |j| j["rope_parameters"]["full_attention"]["rope_type"] = json!("yarn"),
        &[
            "rope_parameters.full_attention.rope_type = \"yarn\"",
            "\"linear\"",
        ],
    );
    refusal(
        "tiny-gemma3",
        |j| {
            o_insert(
                text_config(j),
                "rope_scaling",
                json!({"rope_type": "dynamic", "factor": 2.0}),
            )
        },
        &["text_config.rope_scaling.rope_type = \"dynamic\""],
    );
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "rope_scaling", json!({"type": "llama3", "factor": 8.0})),
        &["rope_scaling.rope_type = \"llama3\""],
    );
    refusal(
        "tiny-gemma2",
        |j| j["rope_parameters"]["partial_rotary_factor"] = json!(0.5),
        &["rope_parameters.partial_rotary_factor = 0.5"],
    );
    refusal(
        "tiny-gemma3-text",
        |j| {
            o_insert(
                j,
                "rope_parameters",
                json!({"rope_type": "default", "rope_theta": 10000.0}),
            )
        },
        &["rope_parameters = ", "keyed by layer type"],
    );
    refusal(
        "tiny-gemma2",
        |j| j["rope_parameters"] = json!({"rope_type": "linear"}),
        &["rope_parameters.factor = null"],
    );
}

#[test]
fn layer_patterns_it_cannot_follow_are_refused() {
    refusal(
        "tiny-gemma2",
        |j| j["layer_types"][1] = json!("chunked_attention"),
        &[
            "layer_types = \"chunked_attention\"",
            "\"sliding_attention\"",
        ],
    );
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "layer_types", json!(["full_attention"])),
        &["layer_types must list one type per layer (3)"],
    );
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "sliding_window", Value::Null),
        &["sliding_window = null"],
    );
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "sliding_window_pattern", json!(3)),
        &["sliding_window_pattern = 3"],
    );
    refusal(
        "tiny-gemma3",
        |j| o_insert(text_config(j), "sliding_window_pattern", json!(0)),
        &["text_config.sliding_window_pattern = 0"],
    );
}

#[test]
fn activations_it_lacks_are_refused() {
    refusal(
        "tiny-gemma2",
        |j| o_insert(j, "hidden_activation", json!("gelu_fast_approx")),
        &[
            "hidden_activation = \"gelu_fast_approx\"",
            "\"gelu_pytorch_tanh\"",
        ],
    );
}

#[test]
fn a_gemma3_folder_needs_a_gemma3_text_config() {
    refusal(
        "tiny-gemma3",
        |j| {
            j.as_object_mut().unwrap().remove("text_config");
        },
        &["text_config"],
    );
    refusal(
        "tiny-gemma3",
        |j| text_config(j)["model_type"] = json!("llama"),
        &["text_config.model_type = \"llama\""],
    );
}

// ---- Weights that disagree with the config ----

fn load_error(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let dir = scratch(&format!("gemma-bad-{name}"));
    copy_dir(&fixture(name), &dir);
    let (mut json, _) = config_of(name);
    edit(&mut json);
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let device = headwise_engine::device::create_device(DeviceChoice::Cpu).unwrap();
    match Model::load(&dir, &device.device, &|_| {}) {
        Ok(_) => panic!("{name}: expected a load error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn weights_of_another_shape_than_the_config_says_are_an_error_naming_the_tensor() {
    let message = load_error("tiny-gemma2", |j| {
        o_insert(j, "intermediate_size", json!(48))
    });
    assert!(
        message.contains("model.layers.0.mlp.gate_proj.weight"),
        "{message}"
    );
    assert!(
        message.contains("[64, 32]") && message.contains("[48, 32]"),
        "{message}"
    );
}

#[test]
fn a_gemma2_checkpoint_read_as_gemma3_misses_its_qk_norms() {
    let message = load_error("tiny-gemma2", |j| {
        o_insert(j, "model_type", json!("gemma3_text"));
        let o = j.as_object_mut().unwrap();
        o.remove("attn_logit_softcapping");
        o.remove("rope_parameters");
    });
    assert!(message.contains("self_attn.q_norm.weight"), "{message}");
}
