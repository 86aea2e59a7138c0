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
    let ids = fixture["token_ids"]
        .as_array()
        .map(|ids| ids.iter().map(|i| i.as_u64().expect("id") as u32).collect());
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
        let grad = HostTensor::new(vec![ours.heads, t, t], ours.grad_attn[l as usize].clone());
        let expected = reference.tensors.get(&key);
        // Entries near zero carry the rounding of the whole backward pass: measured against
        // the layer's largest entry.
        let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_allclose(
            &format!("{what} {key}"),
            &grad,
            expected,
            rtol * scale,
            rtol,
        );
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
        check(
            &name,
            &gradients(&model, &folder, &reference),
            &reference,
            CPU_RTOL,
        );
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
        check(
            name,
            &gradients(&model, &folder, &reference),
            &reference,
            CPU_RTOL,
        );
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
        check(
            name,
            &gradients(&model, &folder, &reference),
            &reference,
            [1e-3, 2e-3],
        );
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
    assert!(
        chosen.target.value < top.target.value,
        "the top token is the most likely"
    );
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

#[test]
fn trace_with_gradients_stores_what_the_engine_computes_with_its_target_and_reopens_without_the_model()
 {
    use headwise_engine::session::Session;
    let dir = scratch("gradients-session");
    let text = "the quick brown fox jumps";
    let session = trace_to(
        &dir,
        &fixture("tiny-llama"),
        &["--text", text, "--gradients", "--edit", "ablate:0.1"],
        "grad.safetensors",
    );
    let opened = Session::open(&session).expect("opens");
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let encoded = model
        .encode(0, text, headwise_engine::LongInput::Reject)
        .unwrap();
    let input = TokenInput::from(&encoded);
    for (index, edits) in [(0, vec![]), (1, vec!["ablate:0.1".to_string()])] {
        let edits = headwise_engine::edits::parse_all(&edits).unwrap();
        let (_, figures) = model
            .text_gradients(&input, &edits, TargetChoice::Top)
            .unwrap();
        let info = &opened.meta.inputs[index];
        let target = info.target.expect("the target is stored");
        assert_eq!(
            (target.kind, target.id),
            (TargetKind::Token, figures.target.id)
        );
        assert_eq!(target.row, encoded.ids.len() - 1);
        assert_eq!(opened.importance(index).unwrap(), figures.importance);
        assert_eq!(opened.relevance(index).unwrap(), figures.relevance);
        for (l, grad) in figures.grad_attn.iter().enumerate() {
            assert_eq!(&opened.gradient_attention(index, l).unwrap(), grad);
        }
    }
    // The ablated head of the edited run has no importance; in the base run it has some.
    let heads = opened.meta.model.heads;
    assert_eq!(opened.importance(1).unwrap()[1], 0.0);
    assert!(opened.importance(0).unwrap()[1] > 0.0);
    assert!(heads > 1);
}

#[test]
fn a_target_given_as_a_token_text_is_that_token_and_one_that_is_not_a_token_is_refused() {
    let dir = scratch("gradients-target");
    let model = load(&fixture("tiny-gpt2"), DeviceChoice::Cpu);
    let tokenizer = model.tokenizer().unwrap();
    // A token of the vocabulary whose text the tokenizer gives back as that one token.
    let id = (260u32..400)
        .find(|&id| tokenizer.single_token_id(&tokenizer.decode(&[id])) == Some(id))
        .expect("a token that round-trips");
    let spelled = tokenizer.decode(&[id]);
    let session = trace_to(
        &dir,
        &fixture("tiny-gpt2"),
        &["--text", "hello world", "--gradients", "--target", &spelled],
        "chosen.safetensors",
    );
    let opened = headwise_engine::session::Session::open(&session).unwrap();
    assert_eq!(opened.meta.inputs[0].target.unwrap().id, id as usize);
    let out = headwise(
        &[
            "trace",
            "--model",
            fixture("tiny-gpt2").to_str().unwrap(),
            "--text",
            "hello world",
            "--gradients",
            "--target",
            "no such token at all in one piece",
            "--device",
            "cpu",
            "--out",
            dir.join("never.safetensors").to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["--target", "is not one token"]);
}

#[test]
fn the_overview_sized_by_importance_leaves_the_unimportant_heads_small_and_the_head_view_draws_the_gradient()
 {
    let dir = scratch("gradients-render");
    let session = trace_to(
        &dir,
        &fixture("tiny-llama"),
        &["--text", "one two three four five six seven", "--gradients"],
        "grad.safetensors",
    );
    let plain = render_with(
        &dir,
        &session,
        &["--view", "overview", "--metric", "importance"],
        "a.png",
    );
    let sized = render_with(
        &dir,
        &session,
        &[
            "--view",
            "overview",
            "--metric",
            "importance",
            "--gradients",
        ],
        "b.png",
    );
    assert_eq!(plain.dimensions(), sized.dimensions());
    // Shrunk cells show the background where full cells were coloured.
    let background = sized.get_pixel(sized.width() - 1, sized.height() - 1).0;
    let count = |img: &image::RgbaImage| img.pixels().filter(|p| p.0 == background).count();
    assert!(
        count(&sized) > count(&plain) + 1000,
        "sized {} vs plain {} background pixels",
        count(&sized),
        count(&plain)
    );
    let attention = render_with(&dir, &session, &["--view", "head:1.0"], "c.png");
    let gradient = render_with(
        &dir,
        &session,
        &["--view", "head:1.0", "--gradients"],
        "d.png",
    );
    assert_ne!(
        attention, gradient,
        "the head view draws ∂target/∂A ⊙ A, not attention"
    );
    assert!(distinct_colours(&gradient) > 20);
}

#[test]
fn render_with_gradients_of_a_session_without_them_says_so() {
    let dir = scratch("gradients-none");
    let session = traced_session(
        &dir,
        "tiny-llama",
        &["no gradients here"],
        "plain.safetensors",
    );
    let png = dir.join("x.png");
    let out = headwise(
        &[
            "render",
            session.to_str().unwrap(),
            "--view",
            "overview",
            "--gradients",
            "--out",
            png.to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["--gradients", "has no gradients"]);
}

#[test]
fn a_session_whose_importance_has_the_wrong_shape_is_refused_by_name() {
    use headwise_engine::session::Session;
    let dir = scratch("gradients-hostile");
    let session = trace_to(
        &dir,
        &fixture("tiny-llama"),
        &["--text", "a b c", "--gradients"],
        "grad.safetensors",
    );
    let bytes = std::fs::read(&session).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec(), v.shape().to_vec(), v.dtype()))
        .collect();
    for t in &mut tensors {
        if t.0 == "importance/0" {
            // Same bytes, one layer × all: no longer [layers, heads].
            t.2 = vec![t.2.iter().product()];
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, dt)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let broken = dir.join("broken.safetensors");
    safetensors::serialize_to_file(views, header.metadata().clone(), &broken).unwrap();
    let err = Session::open(&broken).expect_err("refused").to_string();
    assert!(err.contains("importance/0"), "{err}");
}

/// The layer-by-layer pass (a checkpoint pass, then one layer at a time from the top, as long
/// inputs run) gives PyTorch's figures too, on every text family's fixture.
#[test]
fn gradients_layer_by_layer_equal_pytorch_autograd_on_the_text_families() {
    use headwise_engine::model::gradients::GradientPass;
    for name in [
        "tiny-llama",
        "tiny-gpt2",
        "tiny-bert",
        "tiny-modernbert",
        "tiny-gemma2",
        "tiny-qwen2-window",
    ] {
        let folder = fixture(name);
        let reference = reference(&folder);
        let model = load(&folder, DeviceChoice::Cpu);
        let ids = reference.ids.clone().expect("a text fixture");
        let input = TokenInput {
            type_ids: vec![0; ids.len()],
            ids,
            key_valid: None,
        };
        let (_, figures) = model
            .text_gradients_with(&input, &[], TargetChoice::Top, GradientPass::LayerByLayer)
            .expect("gradients");
        check(
            &format!("{name} layer by layer"),
            &figures,
            &reference,
            CPU_RTOL,
        );
    }
}

#[test]
fn an_edited_run_has_the_same_gradients_whole_or_layer_by_layer() {
    use headwise_engine::model::gradients::GradientPass;
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let input = TokenInput {
        ids: vec![1, 310, 373, 334, 368, 358, 370, 89],
        type_ids: vec![0; 8],
        key_valid: None,
    };
    let edits = headwise_engine::edits::parse_all(&[
        "ablate-mean:0.1".to_string(),
        "scale:1.*:0=0.2".to_string(),
    ])
    .unwrap();
    let run = |pass| {
        model
            .text_gradients_with(&input, &edits, TargetChoice::Top, pass)
            .expect("gradients")
            .1
    };
    let whole = run(GradientPass::Whole);
    let by_layer = run(GradientPass::LayerByLayer);
    assert_eq!(whole.target.id, by_layer.target.id);
    let close = |what: &str, a: &[f32], b: &[f32]| {
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}: {x} vs {y}");
        }
        assert_eq!(a.len(), b.len(), "{what}: lengths");
    };
    close("importance", &whole.importance, &by_layer.importance);
    close("relevance", &whole.relevance, &by_layer.relevance);
    for (l, (a, b)) in whole.grad_attn.iter().zip(&by_layer.grad_attn).enumerate() {
        close(&format!("grad_attn/{l}"), a, b);
    }
}
