//! CLIP and SigLIP vision towers, bare and as the vision half of a two-tower folder: tiny random
//! checkpoints (scripts/make_encoder_fixtures.py) give transformers' attention, queries, keys and
//! token norms, at the trained size and with position embeddings interpolated to another grid;
//! their image processors give transformers' pixels; sessions of them draw in the image view; and
//! what headwise does not implement is refused by name.

use headwise_engine::PixelInput;
use headwise_engine::device::DeviceChoice;
use headwise_engine::host::HostTensor;
use headwise_engine::imaging::{ImageProcessor, load_image};
use headwise_engine::model::Model;
use headwise_engine::model::config::ModelConfig;
use headwise_engine::session::{LayerTensors, Session};
use headwise_tests::*;
use serde_json::{Value, json};
use std::path::Path;

const TOL: f32 = 1e-5;
/// q and k are unnormalised (|k| up to ~7 here); on wgpu the summation order differs more from
/// PyTorch's, by up to ~1.4e-5 on values near 3.7: 2e-6 of the tensor's scale on top of 1e-5.
const QK_RTOL: f32 = 2e-6;
const TOWERS: [&str; 4] = [
    "tiny-clip-vision",
    "tiny-clip",
    "tiny-siglip-vision",
    "tiny-siglip",
];

/// The pixel values stored under `{prefix}pixels`, as a forward pass takes them.
fn pixels_of(expected: &Expected, prefix: &str) -> PixelInput {
    let pixels = expected.get(&format!("{prefix}pixels"));
    let [channels, height, width] = pixels.shape[..] else {
        panic!("pixels are [3, H, W]")
    };
    PixelInput {
        pixels: pixels.data.to_vec(),
        channels,
        height,
        width,
    }
}

/// Runs the tower on `pixels` and compares every layer with the fixture's `{prefix}` tensors.
fn check_run(model: &Model, expected: &Expected, prefix: &str, pixels: &PixelInput) {
    let trace = model.forward_image(pixels).expect("forward");
    assert_eq!(trace.layers.len(), model.config.layers);
    assert!(trace.next_token_probs.is_none(), "a tower has no classes");
    for (l, layer) in trace.layers.iter().enumerate() {
        let ours = LayerTensors::from_trace(layer).expect("read back");
        let key = format!("{prefix}attn/{l}");
        assert_close(&key, ours.full(), expected.get(&key), TOL);
        for (name, t) in [("q", &ours.q), ("k", &ours.k)] {
            let key = format!("{prefix}{name}/{l}");
            assert_allclose(&key, t, expected.get(&key), TOL, QK_RTOL);
        }
        let norms = layer.residual.first().expect("norms").norms.clone();
        let key = format!("{prefix}norms/{l}");
        assert_allclose(
            &key,
            &HostTensor::new(vec![norms.len()], norms),
            expected.get(&key),
            TOL,
            TOL,
        );
    }
}

/// The fixture at its trained size, interpolated to another grid, and on the sample photograph
/// through the folder's own preprocessing.
fn check_tower(name: &str, device: DeviceChoice) -> Model {
    let folder = fixture(name);
    let model = load(&folder, device);
    let expected = Expected::load(&folder);
    check_run(&model, &expected, "", &pixels_of(&expected, ""));
    check_run(
        &model,
        &expected,
        "interpolated/",
        &pixels_of(&expected, "interpolated/"),
    );
    let picture = load_image(&asset("chelsea.png")).unwrap();
    let prepared = model.prepare_image(0, &picture).unwrap();
    let ours = PixelInput::from(&prepared);
    assert_close(
        &format!("{name}: chelsea pixels"),
        &HostTensor::new(vec![3, ours.height, ours.width], ours.pixels.clone()),
        expected.get("chelsea/pixels"),
        1e-6,
    );
    check_run(&model, &expected, "chelsea/", &ours);
    model
}

#[test]
fn tiny_clip_vision_model_matches_transformers() {
    let model = check_tower("tiny-clip-vision", DeviceChoice::Cpu);
    let vision = model.config.vision.as_ref().unwrap();
    assert!(vision.class_token);
    assert_eq!(vision.prefix_tokens(), 1);
    assert_eq!(model.patch_layout(32, 32), Some(([4, 4], 1)));
}

#[test]
fn the_vision_half_of_a_full_clip_folder_matches_transformers() {
    let model = check_tower("tiny-clip", DeviceChoice::Cpu);
    assert_eq!(model.config.model_type, "clip");
    assert_eq!(
        model.config.hidden, 32,
        "the vision tower's, not the text tower's"
    );
    assert_eq!(model.patch_layout(30, 30), Some(([3, 3], 1)));
}

#[test]
fn tiny_siglip_vision_model_has_only_patch_tokens_and_matches_transformers() {
    let model = check_tower("tiny-siglip-vision", DeviceChoice::Cpu);
    assert_eq!(model.config.vision.as_ref().unwrap().prefix_tokens(), 0);
    assert_eq!(model.patch_layout(32, 32), Some(([4, 4], 0)));
}

#[test]
fn the_vision_half_of_a_full_siglip_folder_matches_transformers() {
    let model = check_tower("tiny-siglip", DeviceChoice::Cpu);
    assert_eq!(model.config.model_type, "siglip");
    assert_eq!(model.patch_layout(24, 24), Some(([3, 3], 0)));
}

#[test]
fn vision_towers_match_transformers_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    for name in TOWERS {
        check_tower(name, DeviceChoice::Gpu);
    }
}

#[test]
fn clip_and_siglip_preprocessing_gives_the_pixels_of_their_image_processors() {
    let folder = fixture("images");
    let bytes = std::fs::read(folder.join("towers.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["fixture"]).unwrap();
    let cases = meta["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (name, case) in cases {
        let processor = ImageProcessor::from_json(&case["config"], Path::new(name)).unwrap();
        let picture = load_image(&asset(case["file"].as_str().unwrap())).unwrap();
        let prepared = processor.prepare(&picture);
        let (h, w) = (prepared.view.height, prepared.view.width);
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        assert_eq!(shape, vec![3, h, w], "{name}: size after resize and crop");
        // The fixture keeps every `stride`-th row and column.
        let stride = case["stride"].as_u64().unwrap() as usize;
        let (sh, sw) = (h.div_ceil(stride), w.div_ceil(stride));
        let mut sampled = Vec::with_capacity(3 * sh * sw);
        for c in 0..3 {
            for y in (0..h).step_by(stride) {
                for x in (0..w).step_by(stride) {
                    sampled.push(prepared.pixels[(c * h + y) * w + x]);
                }
            }
        }
        let view = st.tensor(name).unwrap();
        let reference = HostTensor::new(
            view.shape().to_vec(),
            headwise_engine::model::safetensors_file::decode_floats(view.dtype(), view.data())
                .unwrap(),
        );
        assert_close(
            &format!("{name} pixels"),
            &HostTensor::new(vec![3, sh, sw], sampled),
            &reference,
            1e-6,
        );
    }
}

#[test]
fn sessions_of_towers_name_their_tokens_and_draw_in_the_image_view() {
    let dir = scratch("tower-sessions");
    for (name, prefix, first) in [("tiny-clip", 1, "[CLS]"), ("tiny-siglip", 0, "(0,0)")] {
        let session = traced_image_session(
            &dir,
            &fixture(name),
            &asset("chelsea.png"),
            &format!("{name}.safetensors"),
        );
        let opened = Session::open(&session).unwrap();
        let input = &opened.meta.inputs[0];
        assert_eq!(input.prefix_tokens, Some(prefix), "{name}");
        assert_eq!(input.tokens[0], first, "{name}");
        assert_eq!(input.special_tokens.len(), prefix, "{name}");
        let grid = input.patch_grid.unwrap();
        assert_eq!(input.tokens.len(), prefix + grid[0] * grid[1], "{name}");
        let picture = render(&dir, &session, "image:1.0", &format!("{name}.png"));
        let colours = distinct_colours(&picture);
        assert!(
            colours > 1_000,
            "{name}: the photograph shows under the heatmap ({colours} colours)"
        );
    }
}

/// The fixture's config.json with `changes` applied to the object at `path` ("" for the top).
fn tower_config(name: &str, nested: bool, changes: Value) -> Result<ModelConfig, String> {
    let file = fixture(name).join("config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let target = if nested {
        &mut json["vision_config"]
    } else {
        &mut json
    };
    for (key, value) in changes.as_object().unwrap() {
        target[key] = value.clone();
    }
    ModelConfig::from_json(&json, &file).map_err(|e| e.to_string())
}

#[test]
fn a_two_tower_folder_without_a_vision_config_is_refused_by_name() {
    let err = tower_config("tiny-clip", false, json!({"vision_config": null})).unwrap_err();
    assert!(
        err.contains("vision_config") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn a_tower_activation_headwise_lacks_is_refused_by_name() {
    let err = tower_config("tiny-siglip", true, json!({"hidden_act": "mish"})).unwrap_err();
    assert!(err.contains("mish"), "{err}");
}

#[test]
fn nested_tower_configs_take_the_towers_defaults_for_absent_keys() {
    // transformers writes nested configs as differences from the class defaults.
    let mut json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-siglip").join("config.json")).unwrap(),
    )
    .unwrap();
    for key in ["hidden_act", "layer_norm_eps"] {
        json["vision_config"].as_object_mut().unwrap().remove(key);
    }
    let config = ModelConfig::from_json(&json, Path::new("config.json")).unwrap();
    assert_eq!(config.norm_eps, 1e-6, "SigLIP's default epsilon");
    assert_eq!(
        config.activation,
        headwise_engine::model::config::Activation::GeluTanh
    );
}

/// A preprocessor config refused with a message naming every needle.
fn assert_preprocessor_refused(config: Value, needles: &[&str]) {
    let err = ImageProcessor::from_json(&config, Path::new("preprocessor_config.json"))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "'{needle}' in: {err}");
    }
}

#[test]
fn an_image_processor_class_headwise_lacks_is_refused_by_name() {
    assert_preprocessor_refused(
        json!({"image_processor_type": "Siglip2ImageProcessor"}),
        &[
            "image_processor_type",
            "Siglip2ImageProcessor",
            "SiglipImageProcessor",
        ],
    );
}

#[test]
fn padding_in_the_image_processor_is_refused_by_name() {
    assert_preprocessor_refused(
        json!({"image_processor_type": "CLIPImageProcessor", "do_pad": true}),
        &["do_pad", "true"],
    );
}

#[test]
fn convnext_style_crop_percentages_are_refused_by_name() {
    assert_preprocessor_refused(json!({"crop_pct": 0.875}), &["crop_pct", "0.875"]);
}

#[test]
fn an_image_size_by_maximum_height_and_width_is_refused_by_name() {
    assert_preprocessor_refused(
        json!({"size": {"max_height": 512, "max_width": 512}}),
        &["size", "max_height"],
    );
}
