//! Gradients equal PyTorch autograd's (scripts/make_gradient_fixtures.py): each head's
//! importance |∂target/∂ξ_h| and ∂target/∂A ⊙ A to 1e-4 relative, and Chefer et al.'s relevance
//! map to 1e-5 of the reference implementation's, for the same target (kind and id), on every
//! model fixture with a target and on MiniLM, SmolLM2 and DINOv2-S; and sessions keep them.

use headwise_engine::device::DeviceChoice;
use headwise_engine::host::HostTensor;
use headwise_engine::model::gradients::{GradientFigures, TargetChoice, TargetKind};
use headwise_engine::{Model, PixelInput, TokenInput};
use headwise_tests::*;
use std::path::Path;

/// Importance and ∇A ⊙ A to 1e-4 relative, relevance to 1e-5 (the bars).
const CPU_RTOL: [f32; 2] = [1e-4, 1e-5];

/// What gradients.safetensors holds: the tensors, the target, and the input's token ids (none
/// for pictures: those are expected.safetensors' `pixels`).
struct Reference {
    tensors: Expected,
    target: serde_json::Value,
    ids: Option<Vec<u32>>,
}

fn reference(folder: &Path) -> Reference {
    let bytes = std::fs::read(folder.join("gradients.safetensors")).expect("gradients.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data =
                headwise_engine::model::safetensors_file::decode_floats(view.dtype(), view.data())
                    .expect("floats");
            (name, HostTensor::new(view.shape().to_vec(), data))
        })
        .collect();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let metadata = header.metadata().as_ref().expect("metadata");
    let target: serde_json::Value = serde_json::from_str(&metadata["gradients"]).expect("JSON");
    let fixture: serde_json::Value = serde_json::from_str(&metadata["fixture"]).expect("JSON");
    let ids = fixture["token_ids"].as_array().map(|ids| {
        ids.iter()
            .map(|i| i.as_u64().expect("id") as u32)
            .collect()
    });
    Reference {
        tensors: Expected {
            tensors,
            meta: fixture,
        },
        target,
        ids,
    }
}

/// The model's gradients for the fixture's input, with the target the reference chose
/// (the default one: the check that both choose alike comes first).
fn gradients(model: &Model, folder: &Path, reference: &Reference) -> GradientFigures {
    let figures = match &reference.ids {
        Some(ids) => {
            let input = TokenInput {
                ids: ids.clone(),
                type_ids: vec![0; ids.len()],
                key_valid: None,
            };
            model.text_gradients(&input, &[], TargetChoice::Top)
        }
        None => {
            let expected = Expected::load(folder);
            let pixels = expected.get("pixels");
            let [channels, height, width] = pixels.shape[..] else {
                panic!("pixels are [3, H, W]")
            };
            let input = PixelInput {
                pixels: pixels.data.to_vec(),
                channels,
                height,
                width,
            };
            model.image_gradients(&input, TargetChoice::Top)
        }
    }
    .expect("gradients");
    figures.1
}

/// Compares the target, importance and ∇A ⊙ A to `rtol` relative, the relevance map to
/// `relevance_rtol`.
fn check(
    what: &str,
    ours: &GradientFigures,
    reference: &Reference,
    [rtol, relevance_rtol]: [f32; 2],
) {
    let kind = match ours.target.kind {
        TargetKind::Token => "token",
        TargetKind::Class => "class",
        TargetKind::Embedding => "embedding",
    };
    assert_eq!(kind, reference.target["kind"], "{what}: target kind");
    assert_eq!(
        ours.target.id as u64,
        reference.target["id"].as_u64().expect("id"),
        "{what}: target id"
    );
    assert_eq!(
        ours.target.row as u64,
        reference.target["row"].as_u64().expect("row"),
        "{what}: relevance row"
    );
    let value = reference.target["value"].as_f64().expect("value") as f32;
    assert!(
        (ours.target.value - value).abs() <= rtol * value.abs().max(1.0),
        "{what}: target value {} vs {value}",
        ours.target.value
    );
    let t = ours.tokens;
    let importance = HostTensor::new(vec![ours.layers, ours.heads], ours.importance.clone());
    assert_allclose(
        &format!("{what} importance"),
        &importance,
        reference.tensors.get("importance"),
        0.0,
        rtol,
    );
    let stored: Vec<u64> = reference.target["layers_stored"]
        .as_array()
        .expect("layers_stored")
        .iter()
        .map(|l| l.as_u64().expect("layer"))
        .collect();
    assert!(!stored.is_empty(), "{what}: no layer stored");
    for l in stored {
        let key = format!("grad_attn/{l}");
        let grad = HostTensor::new(
            vec![ours.heads, t, t],
            ours.grad_attn[l as usize].clone(),
        );
        let expected = reference.tensors.get(&key);
        // Entries near zero carry the rounding of the whole backward pass: measured against
        // the layer's largest entry.
        let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_allclose(&format!("{what} {key}"), &grad, expected, rtol * scale, rtol);
    }
    let relevance = HostTensor::new(vec![t], ours.relevance.clone());
    assert_allclose(
        &format!("{what} relevance"),
        &relevance,
        reference.tensors.get("relevance"),
        0.0,
        relevance_rtol,
    );
}

#[test]
fn every_model_fixture_with_a_target_has_the_head_importance_gradient_times_attention_and_relevance_of_pytorch_autograd()
 {
    let mut folders: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("gradients.safetensors").exists())
        .collect();
    folders.sort();
    let mut checked = Vec::new();
    for folder in folders {
        let name = folder.file_name().unwrap().to_string_lossy().to_string();
        let reference = reference(&folder);
        let model = load(&folder, DeviceChoice::Cpu);
        check(&name, &gradients(&model, &folder, &reference), &reference, CPU_RTOL);
        checked.push(name);
    }
    assert!(checked.len() >= 24, "only {checked:?}");
}

#[test]
fn the_real_models_have_the_gradients_of_pytorch_autograd() {
    for name in ["minilm", "smollm2", "dinov2-s"] {
        let Some(path) = real_model(name) else {
            continue;
        };
        let folder = fixture(&format!("real/{name}"));
        let reference = reference(&folder);
        let model = load(&path, DeviceChoice::Cpu);
        check(name, &gradients(&model, &folder, &reference), &reference, CPU_RTOL);
    }
}

/// wgpu sums in another order than the CPU, and a backward pass through every layer carries
/// that rounding further than the forward: 1e-3 relative there, 2e-3 for relevance, which
/// sums every layer's (measured on lavapipe: 2e-4 and 9e-4 on tiny-bert).
#[test]
fn gradients_are_the_same_on_wgpu() {
    let Some(device) = wgpu_device() else {
        return;
    };
    for name in ["tiny-llama", "tiny-bert", "tiny-vit"] {
        let folder = fixture(name);
        let reference = reference(&folder);
        let model = Model::load(&folder, &device.device, &|_| {}).expect("load");
        check(name, &gradients(&model, &folder, &reference), &reference, [1e-3, 2e-3]);
    }
}

#[test]
fn a_chosen_target_is_differentiated_and_one_outside_the_vocabulary_is_refused_by_name() {
    let folder = fixture("tiny-llama");
    let model = load(&folder, DeviceChoice::Cpu);
    let input = TokenInput {
        ids: vec![1, 310, 373, 334],
        type_ids: vec![0; 4],
        key_valid: None,
    };
    let (_, top) = model
        .text_gradients(&input, &[], TargetChoice::Top)
        .expect("top");
    let other = (top.target.id + 1) % 100;
    let (_, chosen) = model
        .text_gradients(&input, &[], TargetChoice::Id(other))
        .expect("chosen");
    assert_eq!(chosen.target.id, other);
    assert!(chosen.target.value < top.target.value, "the top token is the most likely");
    assert_ne!(chosen.importance, top.importance);
    let err = model
        .text_gradients(&input, &[], TargetChoice::Id(1 << 30))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}

#[test]
fn an_ablated_head_has_no_importance_and_the_others_still_do() {
    let folder = fixture("tiny-llama");
    let model = load(&folder, DeviceChoice::Cpu);
    let input = TokenInput {
        ids: vec![1, 310, 373, 334, 368, 358],
        type_ids: vec![0; 6],
        key_valid: None,
    };
    let edits = headwise_engine::edits::parse_all(&["ablate:1.2".to_string()]).expect("edit");
    let (_, figures) = model
        .text_gradients(&input, &edits, TargetChoice::Top)
        .expect("gradients");
    let heads = figures.heads;
    assert_eq!(figures.importance[heads + 2], 0.0);
    assert!(figures.importance.iter().filter(|&&v| v > 0.0).count() >= heads);
}

#[test]
fn a_vision_tower_without_a_pooled_token_says_gradients_are_not_available() {
    let model = load(&fixture("tiny-siglip-vision"), DeviceChoice::Cpu);
    let err = model.target_kind().unwrap_err().to_string();
    assert!(err.contains("gradients are not available"), "{err}");
}
