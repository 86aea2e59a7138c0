//! Corpus runs pack many inputs into one forward pass (positions restart per input, a
//! block-diagonal mask): each input's trace must be the one it gets alone.

use headwise_engine::TokenInput;
use headwise_engine::device::DeviceChoice;
use headwise_engine::session::LayerTensors;
use headwise_engine::{AttentionCapture, LongInput, Trace};
use headwise_tests::*;

const TOL: f32 = 1e-5;

fn inputs(model: &headwise_engine::Model) -> Vec<TokenInput> {
    let texts = [
        "the quick brown fox",
        "jumps over the lazy dog and runs away",
        "a",
        "call me Ishmael",
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| TokenInput::from(&model.encode(i, t, LongInput::Reject).unwrap()))
        .collect()
}

fn assert_same(what: &str, packed: &Trace, alone: &Trace) {
    assert_eq!(packed.layers.len(), alone.layers.len());
    for (l, (p, a)) in packed.layers.iter().zip(&alone.layers).enumerate() {
        let (p, a) = (
            LayerTensors::from_trace(p).unwrap(),
            LayerTensors::from_trace(a).unwrap(),
        );
        assert_close(&format!("{what} layer {l} attn"), p.full(), a.full(), TOL);
        assert_close(&format!("{what} layer {l} q"), &p.q, &a.q, TOL);
        assert_close(&format!("{what} layer {l} k"), &p.k, &a.k, TOL);
    }
    match (&packed.next_token_probs, &alone.next_token_probs) {
        (Some(p), Some(a)) => {
            let worst = p
                .iter()
                .zip(a)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < TOL,
                "{what}: next-token probabilities differ by {worst}"
            );
        }
        (None, None) => {}
        _ => panic!("{what}: next-token distribution on one side only"),
    }
}

fn packed_equals_alone(device: DeviceChoice) {
    for name in ["tiny-bert", "tiny-gpt2", "tiny-llama", "tiny-qwen2"] {
        let model = load(&fixture(name), device);
        let inputs = inputs(&model);
        let alone: Vec<Trace> = inputs.iter().map(|i| model.forward(i).unwrap()).collect();
        let mut passes = 0;
        let packed = model
            .forward_many(&inputs, 10_000, AttentionCapture::Full, &mut |_| {
                passes += 1;
                true
            })
            .unwrap();
        assert_eq!(passes, 1, "{name}: every input in one pass");
        assert_eq!(packed.len(), inputs.len());
        for (i, (p, a)) in packed.iter().zip(&alone).enumerate() {
            assert_same(&format!("{name} input {i}"), p, a);
        }
    }
}

#[test]
fn packed_inputs_give_each_input_the_trace_it_gets_alone_for_every_text_architecture() {
    packed_equals_alone(DeviceChoice::Cpu);
}

#[test]
fn packing_gives_the_same_traces_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    packed_equals_alone(DeviceChoice::Gpu);
}

#[test]
fn the_token_budget_splits_passes_and_a_stop_keeps_what_was_done() {
    let model = load(&fixture("tiny-gpt2"), DeviceChoice::Cpu);
    let inputs = inputs(&model);
    let mut reported = Vec::new();
    let traces = model
        .forward_many(&inputs, 1, AttentionCapture::Full, &mut |done| {
            reported.push(done);
            true
        })
        .unwrap();
    assert_eq!(traces.len(), 4);
    assert_eq!(
        reported,
        vec![1, 2, 3, 4],
        "a budget of 1 token: one input per pass"
    );
    let stopped = model
        .forward_many(&inputs, 1, AttentionCapture::Full, &mut |done| done < 2)
        .unwrap();
    assert_eq!(stopped.len(), 2, "stopped after the second pass");
}

#[test]
fn a_bad_input_anywhere_in_a_corpus_is_named_before_any_pass() {
    let model = load(&fixture("tiny-gpt2"), DeviceChoice::Cpu);
    let mut inputs = inputs(&model);
    inputs[2].ids.clear();
    let mut passes = 0;
    let err = model
        .forward_many(&inputs, 10_000, AttentionCapture::Full, &mut |_| {
            passes += 1;
            true
        })
        .unwrap_err();
    assert!(err.to_string().contains("input 2"), "{err}");
    assert_eq!(passes, 0);
}
