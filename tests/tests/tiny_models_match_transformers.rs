//! Tiny random checkpoints of each architecture give the attention, queries, keys, each row's
//! logsumexp of the logits (and the next-token distribution) that Hugging Face transformers
//! computes, to 1e-5, on the CPU and on wgpu.

use headwise_engine::TokenInput;
use headwise_engine::device::DeviceChoice;
use headwise_engine::session::LayerTensors;
use headwise_tests::*;

const TOL: f32 = 1e-5;

#[test]
fn tiny_bert_matches_transformers_on_cpu() {
    let folder = fixture("tiny-bert");
    check_against_transformers(
        &load(&folder, DeviceChoice::Cpu),
        &Expected::load(&folder),
        TOL,
    );
}

#[test]
fn tiny_gpt2_matches_transformers_on_cpu() {
    let folder = fixture("tiny-gpt2");
    check_against_transformers(
        &load(&folder, DeviceChoice::Cpu),
        &Expected::load(&folder),
        TOL,
    );
}

#[test]
fn tiny_llama_with_grouped_query_attention_matches_transformers_on_cpu() {
    let folder = fixture("tiny-llama");
    let model = load(&folder, DeviceChoice::Cpu);
    assert_eq!((model.config.heads, model.config.kv_heads), (4, 2));
    assert_eq!(
        model.config.rope_theta, 500.0,
        "rope theta read from rope_parameters"
    );
    check_against_transformers(&model, &Expected::load(&folder), TOL);
}

#[test]
fn tiny_qwen2_with_qkv_biases_and_tied_embeddings_matches_transformers_on_cpu() {
    let folder = fixture("tiny-qwen2");
    let model = load(&folder, DeviceChoice::Cpu);
    assert!(model.config.attention_bias && model.config.tie_word_embeddings);
    check_against_transformers(&model, &Expected::load(&folder), TOL);
}

#[test]
fn bert_padding_mask_hides_padded_keys_as_transformers_does() {
    let folder = fixture("tiny-bert");
    let model = load(&folder, DeviceChoice::Cpu);
    let expected = Expected::load(&folder);
    let ids: Vec<u32> = expected.meta["padded_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let valid: Vec<bool> = expected.meta["padded_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() == 1)
        .collect();
    assert!(valid.contains(&false), "the fixture has padding");
    let input = TokenInput {
        type_ids: vec![0; ids.len()],
        ids,
        key_valid: Some(valid),
    };
    let trace = model.forward(&input).unwrap();
    for (l, layer) in trace.layers.iter().enumerate() {
        let ours = LayerTensors::from_trace(layer).unwrap();
        assert_close(
            &format!("padded attn {l}"),
            ours.full(),
            expected.get(&format!("padded_attn/{l}")),
            TOL,
        );
        assert_close(
            &format!("padded q {l}"),
            &ours.q,
            expected.get(&format!("padded_q/{l}")),
            TOL,
        );
        assert_close(
            &format!("padded k {l}"),
            &ours.k,
            expected.get(&format!("padded_k/{l}")),
            TOL,
        );
        assert_close(
            &format!("padded lse {l}"),
            &lse_of(layer),
            expected.get(&format!("padded_lse/{l}")),
            TOL,
        );
    }
}

#[test]
fn gguf_files_of_every_tensor_type_match_transformers_dequantised() {
    for kind in ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"] {
        let file = fixture("tiny-gguf").join(format!("tiny-llama.{kind}.gguf"));
        let model = load(&file, DeviceChoice::Cpu);
        let expected = Expected::load(&fixture("tiny-gguf").join(kind));
        check_against_transformers(&model, &expected, TOL);
    }
}

/// The wgpu path (lavapipe on CI) computes the same numbers as the CPU path and transformers.
#[test]
fn tiny_models_match_transformers_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    for name in ["tiny-bert", "tiny-gpt2", "tiny-llama", "tiny-qwen2"] {
        let folder = fixture(name);
        check_against_transformers(
            &load(&folder, DeviceChoice::Gpu),
            &Expected::load(&folder),
            TOL,
        );
    }
    let file = fixture("tiny-gguf").join("tiny-llama.Q4_1.gguf");
    check_against_transformers(
        &load(&file, DeviceChoice::Gpu),
        &Expected::load(&fixture("tiny-gguf").join("Q4_1")),
        TOL,
    );
}
