//! Vision transformers: tiny random ViT, DeiT and DINOv2 checkpoints (and an ONNX export) give
//! the attention, queries, keys and class probabilities transformers computes for the same pixel
//! values; the preprocessing gives the pixels Hugging Face's image processors give; image files
//! in any mode decode upright; and `headwise trace --image` writes image sessions.

use headwise_engine::device::DeviceChoice;
use headwise_engine::host::HostTensor;
use headwise_engine::imaging::{ImageProcessor, load_image};
use headwise_engine::session::{InputKind, LayerTensors, Session};
use headwise_engine::{Model, PixelInput};
use headwise_tests::*;
use std::path::Path;
use std::process::Output;

const TOL: f32 = 1e-5;

/// The pixel values a fixture was run on, as a forward pass takes them.
fn fixture_pixels(expected: &Expected) -> PixelInput {
    let pixels = expected.get("pixels");
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

/// Runs `model` on the fixture's pixels and compares every layer (and the class probabilities
/// where the fixture has them).
fn check_image_model(model: &Model, expected: &Expected, tol: f32) {
    let trace = model
        .forward_image(&fixture_pixels(expected))
        .expect("forward");
    assert_eq!(trace.layers.len(), model.config.layers);
    for (l, layer) in trace.layers.iter().enumerate() {
        let ours = LayerTensors::from_trace(layer).expect("read back");
        for (name, t) in [("attn", ours.full()), ("q", &ours.q), ("k", &ours.k)] {
            let key = format!("{name}/{l}");
            assert_close(&key, t, expected.get(&key), tol);
        }
        let key = format!("norms/{l}");
        let norms = layer
            .residual
            .first()
            .expect("every model reports token norms")
            .norms
            .clone();
        // Norms grow with depth; compare relative to their size.
        assert_allclose(
            &key,
            &HostTensor::new(vec![norms.len()], norms),
            expected.get(&key),
            tol,
            tol,
        );
    }
    if let Some(probs) = expected.tensors.get("class_probs") {
        let ours = trace.next_token_probs.expect("class probabilities");
        assert_close(
            "class probabilities",
            &HostTensor::new(vec![ours.len()], ours),
            probs,
            tol,
        );
    }
}

fn check_fixture(name: &str, device: DeviceChoice) -> Model {
    let folder = fixture(name);
    let model = load(&folder, device);
    check_image_model(&model, &Expected::load(&folder), TOL);
    model
}

#[test]
fn tiny_vit_classifier_matches_transformers() {
    let model = check_fixture("tiny-vit", DeviceChoice::Cpu);
    let vision = model.config.vision.as_ref().unwrap();
    assert_eq!(vision.labels[0], "tabby cat", "labels from id2label");
    assert_eq!(vision.prefix_tokens(), 1);
}

#[test]
fn tiny_deit_with_distillation_token_matches_transformers() {
    let model = check_fixture("tiny-deit", DeviceChoice::Cpu);
    assert_eq!(model.config.vision.as_ref().unwrap().prefix_tokens(), 2);
}

#[test]
fn tiny_dinov2_interpolates_positions_to_a_non_square_grid_as_transformers_does() {
    let model = check_fixture("tiny-dinov2", DeviceChoice::Cpu);
    let vision = model.config.vision.as_ref().unwrap();
    assert_eq!(vision.trained_grid(), [5, 5]);
    assert_eq!(model.patch_layout(32, 48), Some(([4, 6], 1)));
}

#[test]
fn tiny_dinov2_with_registers_puts_them_after_cls_and_antialiases_positions() {
    let model = check_fixture("tiny-dinov2-registers", DeviceChoice::Cpu);
    assert_eq!(model.patch_layout(24, 40), Some(([3, 5], 3)));
}

#[test]
fn onnx_export_loads_with_weights_named_through_its_nodes() {
    // torch's exporter leaves the linear weights anonymous (onnx::MatMul_*) and folds the
    // position embeddings; there is no config.json beside the graph.
    let folder = fixture("tiny-dinov2-onnx");
    let model = load(&folder.join("model.onnx"), DeviceChoice::Cpu);
    assert_eq!(model.config.model_type, "dinov2");
    assert_eq!(
        (model.config.layers, model.config.heads, model.config.hidden),
        (2, 4, 32),
        "layers and hidden size from the weights, heads from the graph's reshapes"
    );
    check_image_model(&model, &Expected::load(&folder), TOL);
}

#[test]
fn tiny_vision_models_match_transformers_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    for name in [
        "tiny-vit",
        "tiny-deit",
        "tiny-dinov2",
        "tiny-dinov2-registers",
    ] {
        check_fixture(name, DeviceChoice::Gpu);
    }
}

/// Pillow's fixed-point resampling is reproduced step for step, so the only differences left
/// are f32 rounding in the normalisation: one unit in the last place of values up to ~2.6.
const PIXEL_TOL: f32 = 1e-6;

#[test]
fn preprocessing_gives_the_pixels_of_hugging_face_image_processors() {
    let expected = Expected::load(&fixture("images"));
    let cases = expected.meta["cases"].as_object().expect("cases");
    assert_eq!(cases.len(), 3);
    for (name, case) in cases {
        let processor = ImageProcessor::from_json(&case["config"], Path::new(name)).unwrap();
        let file = case["file"].as_str().unwrap();
        let picture = load_image(&asset(file)).unwrap();
        let prepared = processor.prepare(&picture);
        let reference = expected.get(&format!("pil/{name}"));
        let ours = HostTensor::new(
            vec![3, prepared.view.height, prepared.view.width],
            prepared.pixels,
        );
        assert_close(&format!("{name} pixels"), &ours, reference, PIXEL_TOL);
    }
}

fn image_fixture(name: &str) -> std::path::PathBuf {
    fixture("images").join(name)
}

#[test]
fn grayscale_rgba_16_bit_and_webp_images_become_the_same_rgb() {
    let rgb = load_image(&image_fixture("small.png")).unwrap();
    let webp = load_image(&image_fixture("lossless.webp")).unwrap();
    assert_eq!(webp, rgb, "lossless WebP decodes to the PNG's pixels");
    let gray = load_image(&image_fixture("gray.png")).unwrap();
    let gray16 = load_image(&image_fixture("gray16.png")).unwrap();
    let rgba = load_image(&image_fixture("rgba.png")).unwrap();
    assert_eq!((gray.width, gray.height), (90, 60));
    assert!(
        gray.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]),
        "grayscale spreads to three equal channels"
    );
    assert_eq!(
        gray16, gray,
        "16-bit samples scale to the same 8-bit values"
    );
    assert_eq!(rgba, rgb, "alpha is dropped, colour kept");
}

#[test]
fn exif_orientation_turns_the_picture_upright() {
    let upright = load_image(&image_fixture("rotated.jpg")).unwrap();
    let expected = Expected::load(&fixture("images"));
    let reference = expected.get("upright_rotated");
    assert_eq!(
        [upright.height, upright.width, 3],
        reference.shape[..],
        "a 90×60 picture taken sideways shows as 60×90"
    );
    // Two JPEG decoders differ by a few levels; a wrong rotation differs by far more.
    let mean_diff: f32 = upright
        .pixels
        .iter()
        .zip(reference.data.iter())
        .map(|(a, b)| (f32::from(*a) - b).abs())
        .sum::<f32>()
        / reference.data.len() as f32;
    assert!(
        mean_diff < 3.0,
        "mean difference {mean_diff} from Pillow's upright picture"
    );
}

#[test]
fn trace_writes_an_image_session_that_opens_without_the_picture() {
    let dir = scratch("trace-image");
    let picture = dir.join("cat.png");
    std::fs::copy(asset("chelsea.png"), &picture).unwrap();
    let out = traced_image_session(&dir, &fixture("tiny-dinov2"), &picture, "cat.safetensors");
    std::fs::remove_file(&picture).unwrap();
    let session = Session::open(&out).unwrap();
    let input = &session.meta.inputs[0];
    assert_eq!(input.kind, InputKind::Image);
    assert_eq!(input.image.as_deref(), Some("cat.png"));
    // The fixture's preprocessing: short side to 40, centre crop 40 × 40, 8-pixel patches.
    assert_eq!(input.patch_grid, Some([5, 5]));
    assert_eq!(input.prefix_tokens, Some(1));
    assert_eq!(input.tokens.len(), 26);
    assert_eq!(input.tokens[0], "[CLS]");
    assert_eq!(input.tokens[1], "(0,0)");
    assert_eq!(input.special_tokens, vec![0]);
    assert_eq!(input.next_tokens.len(), 5, "the classifier's top classes");
    let image = session.image(0).expect("the picture is in the session");
    assert_eq!((image.width, image.height), (40, 40));
    assert_eq!(session.layers[0][0].full().shape, vec![4, 26, 26]);
}

#[test]
fn trace_runs_every_picture_of_a_folder() {
    let dir = scratch("trace-images");
    let pictures = dir.join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(asset(name), pictures.join(name)).unwrap();
    }
    std::fs::write(pictures.join("notes.txt"), "not a picture").unwrap();
    let out = dir.join("both.safetensors");
    assert_success(&headwise(
        &[
            "trace",
            "--model",
            fixture("tiny-vit").to_str().unwrap(),
            "--images",
            pictures.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
        &dir,
    ));
    let session = Session::open(&out).unwrap();
    let names: Vec<_> = session
        .meta
        .inputs
        .iter()
        .map(|i| i.image.clone().unwrap())
        .collect();
    assert_eq!(names, ["chelsea.png", "coffee.png"]);
}

/// `headwise trace --model MODEL INPUT...` in a fresh scratch folder, expected to fail.
fn trace_expecting_failure(scratch_name: &str, model: &Path, input: &[&str]) -> Output {
    let dir = scratch(scratch_name);
    let mut args = vec!["trace", "--model", model.to_str().unwrap()];
    args.extend(input);
    headwise(&args, &dir)
}

#[test]
fn a_file_that_is_not_an_image_is_named_in_the_error() {
    let file = image_fixture("not-an-image.png");
    let out = trace_expecting_failure(
        "not-an-image",
        &fixture("tiny-vit"),
        &["--image", file.to_str().unwrap(), "--device", "cpu"],
    );
    assert_clean_failure(&out, &["not-an-image.png", "not an image"]);
}

#[test]
fn a_truncated_image_is_named_in_the_error() {
    let file = image_fixture("truncated.png");
    let out = trace_expecting_failure(
        "truncated-image",
        &fixture("tiny-vit"),
        &["--image", file.to_str().unwrap(), "--device", "cpu"],
    );
    assert_clean_failure(&out, &["truncated.png", "truncated or corrupt"]);
}

#[test]
fn an_image_given_to_a_text_model_is_refused_clearly() {
    let file = image_fixture("small.png");
    let out = trace_expecting_failure(
        "image-to-text-model",
        &fixture("tiny-bert"),
        &["--image", file.to_str().unwrap(), "--device", "cpu"],
    );
    assert_clean_failure(&out, &["tiny-bert", "text model", "not an image"]);
}

#[test]
fn text_given_to_an_image_model_is_refused_clearly() {
    let out = trace_expecting_failure(
        "text-to-image-model",
        &fixture("tiny-vit"),
        &["--text", "a cat", "--device", "cpu"],
    );
    assert_clean_failure(&out, &["tiny-vit", "image model", "not text"]);
}

#[test]
fn an_onnx_graph_that_is_not_a_vit_is_refused_clearly() {
    let file = image_fixture("small.png");
    let out = trace_expecting_failure(
        "not-a-vit",
        &fixture("not-a-vit.onnx"),
        &["--image", file.to_str().unwrap()],
    );
    assert_clean_failure(&out, &["not-a-vit.onnx", "not an exported ViT"]);
}

#[test]
fn a_corrupt_onnx_file_is_refused_clearly() {
    let dir = scratch("corrupt-onnx-source");
    let graph = truncated_copy(
        &fixture("tiny-dinov2-onnx").join("model.onnx"),
        1,
        2,
        &dir,
        "cut.onnx",
    );
    let file = image_fixture("small.png");
    let out = trace_expecting_failure("corrupt-onnx", &graph, &["--image", file.to_str().unwrap()]);
    assert_clean_failure(&out, &["cut.onnx", "ONNX"]);
}

#[test]
fn an_image_session_renders_in_the_overview_and_head_view() {
    use headwise::render::colormap::ColorMap;
    use headwise_tests::pixels::{decode_heatmap, grid_bands, heatmap_box, map_mask};
    if wgpu_device().is_none() {
        return;
    }
    let dir = scratch("render-image-session");
    let path = traced_image_session(
        &dir,
        &fixture("tiny-vit"),
        &asset("chelsea.png"),
        "cat.safetensors",
    );
    let session = Session::open(&path).unwrap();
    // The overview: a band of cells per layer and per head (2 layers of 4 heads).
    let overview = render(&dir, &path, "overview", "overview.png");
    let (rows, columns) = grid_bands(&map_mask(&overview, ColorMap::Viridis));
    assert_eq!((rows.len(), columns.len()), (2, 4), "{rows:?} {columns:?}");
    // The head view: that head's attention over the patches and CLS, read back from the pixels.
    let picture = render(&dir, &path, "head:1.3", "head.png");
    let attn = session.layers[0][1].full();
    let t = attn.shape[1];
    let head = &attn.data[3 * t * t..4 * t * t];
    let mask = map_mask(&picture, ColorMap::Viridis);
    let decoded = decode_heatmap(&picture, heatmap_box(&mask), t, ColorMap::Viridis);
    let error = decoded
        .iter()
        .zip(head)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(error <= 2.5 / 255.0, "head 1.3 decodes with error {error}");
}

/// One case of the committed rollout reference: its settings, as the script wrote them, and the
/// rollout it expects, [T, T].
type RolloutCase = (
    headwise_engine::analysis::rollout::RolloutSettings,
    String,
    HostTensor,
);

/// The tiny DINOv2's attention and every case of the committed rollout reference.
fn rollout_reference() -> (Vec<HostTensor>, Vec<RolloutCase>) {
    use headwise_engine::analysis::rollout::{Fusion, RolloutSettings};
    let attention = Expected::load(&fixture("tiny-dinov2"));
    let layers: Vec<HostTensor> = (0..2)
        .map(|l| attention.get(&format!("attn/{l}")).clone())
        .collect();
    let expected = Expected::load(&fixture("rollout"));
    let cases = expected.meta["settings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let settings = RolloutSettings {
                fusion: match s["fusion"].as_str().unwrap() {
                    "mean" => Fusion::Mean,
                    "max" => Fusion::Max,
                    _ => Fusion::Min,
                },
                discard_ratio: s["discard_ratio"].as_f64().unwrap() as f32,
                start_layer: s["start_layer"].as_u64().unwrap() as usize,
            };
            let reference = expected.get(&format!("rollout/{i}")).clone();
            (settings, s.to_string(), reference)
        })
        .collect();
    (layers, cases)
}

#[test]
fn rollout_equals_the_reference_for_each_fusion_discard_ratio_and_start_layer() {
    use headwise_engine::analysis::rollout::{rollout, rollout_row};
    let (layers, cases) = rollout_reference();
    let t = layers[0].shape[1];
    assert_eq!(cases.len(), 3);
    for (settings, s, reference) in &cases {
        let ours = HostTensor::new(vec![t, t], rollout(&layers, settings));
        assert_close(&format!("rollout {s}"), &ours, reference, 1e-6);
        let cls = rollout_row(&layers, settings, 0);
        assert_close(
            &format!("CLS row of rollout {s}"),
            &HostTensor::new(vec![t], cls),
            &HostTensor::new(vec![t], reference.data[..t].to_vec()),
            1e-6,
        );
    }
}

/// The device rollout (burn's CPU backend, and wgpu where there is an adapter) gives the rows
/// of the committed reference for every setting, as the host version does.
#[test]
fn rollout_on_the_device_equals_the_reference_on_cpu_and_wgpu() {
    use headwise_engine::analysis::rollout_device::DeviceLayers;
    use headwise_engine::device::create_device;
    let (layers, cases) = rollout_reference();
    let t = layers[0].shape[1];
    let mut devices = vec![create_device(DeviceChoice::Cpu).unwrap()];
    devices.extend(wgpu_device());
    for device in &devices {
        let uploaded = DeviceLayers::upload(&layers, &device.device);
        for (settings, s, reference) in &cases {
            let matrices = uploaded.matrices(settings);
            for query in [0, 1, t / 2, t - 1] {
                let row = matrices.row(query).unwrap();
                assert_close(
                    &format!("{}: row {query} of rollout {s}", device.description),
                    &HostTensor::new(vec![t], row),
                    &HostTensor::new(vec![t], reference.data[query * t..(query + 1) * t].to_vec()),
                    1e-5,
                );
            }
        }
    }
}

/// The image view's rollout overlay, computed on the document's device as the sliders move,
/// gives the host rollout's row over the patches, for a pruned max fusion from layer 1.
#[test]
fn the_image_views_rollout_overlay_is_the_rollout_row_over_the_patches() {
    use headwise::document::Document;
    use headwise::views::image::{Overlay, patch_values};
    use headwise::views::state::{ImageViewState, PatchSource};
    use headwise_engine::analysis::rollout::{Fusion, RolloutSettings, rollout_row};
    let dir = scratch("rollout-overlay");
    let path = traced_image_session(
        &dir,
        &fixture("tiny-dinov2"),
        &asset("chelsea.png"),
        "cat.safetensors",
    );
    let doc = Document::new(Session::open(&path).unwrap());
    let info = &doc.session.meta.inputs[0];
    let [rows, cols] = info.patch_grid.unwrap();
    let prefix = info.prefix_tokens.unwrap();
    let rollout = RolloutSettings {
        fusion: Fusion::Max,
        discard_ratio: 0.3,
        start_layer: 1,
    };
    let settings = ImageViewState {
        source: PatchSource::Rollout,
        rollout,
        ..Default::default()
    };
    let layers: Vec<_> = doc.session.layers[0].iter().map(|l| l.full()).collect();
    let ctx = eframe::egui::Context::default();
    for query in [0, prefix + 3] {
        let overlay = Overlay {
            query,
            source: PatchSource::Rollout,
            layer: 0,
            head: 0,
        };
        let ours = patch_values(&ctx, &doc, 0, overlay, &settings).unwrap();
        let host = rollout_row(&layers, &rollout, query);
        assert_close(
            &format!("rollout overlay for query {query}"),
            &HostTensor::new(vec![rows * cols], ours),
            &HostTensor::new(
                vec![rows * cols],
                host[prefix..prefix + rows * cols].to_vec(),
            ),
            1e-5,
        );
    }
}

/// Past 256 tokens the rollout's layer matrices are built off the UI thread when a slider
/// moves; the overlay arrives a few frames later and is the same row.
#[test]
fn a_long_inputs_rollout_overlay_is_built_in_the_background_and_equals_the_host_row() {
    use headwise::document::Document;
    use headwise::views::image::{Overlay, patch_values};
    use headwise::views::state::{ImageViewState, PatchSource};
    use headwise_engine::analysis::rollout::{Fusion, RolloutSettings, rollout_row};
    let dir = scratch("rollout-overlay-long");
    // The tiny DINOv2 at 200 × 200 pixels: 25 × 25 patches and CLS, 626 tokens.
    let model = dir.join("tiny-dinov2-200");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture("tiny-dinov2")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let config = model.join("preprocessor_config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"shortest_edge\": 40", "\"shortest_edge\": 200")
        .replace("\"height\": 40", "\"height\": 200")
        .replace("\"width\": 40", "\"width\": 200");
    std::fs::write(&config, text).unwrap();
    let path = traced_image_session(&dir, &model, &asset("chelsea.png"), "cat.safetensors");
    let doc = Document::new(Session::open(&path).unwrap());
    let info = &doc.session.meta.inputs[0];
    assert_eq!(info.tokens.len(), 626);
    let [rows, cols] = info.patch_grid.unwrap();
    let rollout = RolloutSettings {
        fusion: Fusion::Mean,
        discard_ratio: 0.2,
        start_layer: 0,
    };
    let settings = ImageViewState {
        source: PatchSource::Rollout,
        rollout,
        ..Default::default()
    };
    let overlay = Overlay {
        query: 0,
        source: PatchSource::Rollout,
        layer: 0,
        head: 0,
    };
    let ctx = eframe::egui::Context::default();
    // The frame that moves the slider does not wait: there is no row yet to keep on screen.
    assert!(patch_values(&ctx, &doc, 0, overlay, &settings).is_none());
    let started = std::time::Instant::now();
    let ours = loop {
        if let Some(values) = patch_values(&ctx, &doc, 0, overlay, &settings) {
            break values;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the background rollout never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let layers: Vec<_> = doc.session.layers[0].iter().map(|l| l.full()).collect();
    let patches = |r: &RolloutSettings| rollout_row(&layers, r, 0)[1..1 + rows * cols].to_vec();
    assert_close(
        "background rollout overlay",
        &HostTensor::new(vec![rows * cols], ours.clone()),
        &HostTensor::new(vec![rows * cols], patches(&rollout)),
        1e-5,
    );

    // Dragging a slider: each new setting keeps the last row on screen until its own arrives,
    // and the newest setting is the one that ends up drawn.
    let mut dragged = settings.clone();
    for discard in [0.4, 0.6] {
        dragged.rollout.discard_ratio = discard;
        let shown = patch_values(&ctx, &doc, 0, overlay, &dragged);
        assert_eq!(
            shown.as_ref(),
            Some(&ours),
            "discard {discard}: the last row stays"
        );
    }
    let newest = patches(&dragged.rollout);
    let started = std::time::Instant::now();
    loop {
        let shown = patch_values(&ctx, &doc, 0, overlay, &dragged).unwrap();
        let largest = shown
            .iter()
            .zip(&newest)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if largest < 1e-5 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the newest setting's rollout never arrived ({largest})"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn render_draws_the_image_view_and_patch_labelled_head_view_and_refuses_image_view_for_text() {
    if wgpu_device().is_none() {
        return;
    }
    let dir = scratch("render-image-view");
    let session = traced_image_session(
        &dir,
        &fixture("tiny-dinov2"),
        &asset("chelsea.png"),
        "cat.safetensors",
    );
    let colours = distinct_colours(&render(&dir, &session, "image:1.2", "image.png"));
    assert!(
        colours > 5_000,
        "the photograph shows under the heatmap: {colours} colours"
    );
    // The head view labels each patch with its piece of the picture (a text session's head view
    // has a few hundred colours: the map's and the labels').
    let colours = distinct_colours(&render(&dir, &session, "head:1.2", "head.png"));
    assert!(
        colours > 5_000,
        "patch thumbnails on the axes: {colours} colours"
    );
    let text = traced_session(&dir, "tiny-bert", &["a cat"], "text.safetensors");
    let out = headwise(
        &[
            "render",
            text.to_str().unwrap(),
            "--view",
            "image:0.0",
            "--out",
            dir.join("no.png").to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_failure(&out, &["image:0.0", "not an image"]);
}

#[test]
fn exporting_a_layer_from_the_image_view_writes_every_heads_overlay() {
    use headwise::document::Document;
    use headwise::gui::export::ExportJob;
    use headwise::jobs::Repaint;
    use headwise::render::offscreen::Offscreen;
    use headwise::views::state::{Tab, ViewState};
    if wgpu_device().is_none() {
        return;
    }
    let setup = headwise_engine::device::shared_wgpu_setup().expect("the adapter just found");
    let dir = scratch("export-overlays");
    let session = traced_image_session(
        &dir,
        &fixture("tiny-dinov2"),
        &asset("chelsea.png"),
        "cat.safetensors",
    );
    let doc = std::sync::Arc::new(Document::new(Session::open(&session).unwrap()));
    let view = ViewState {
        tab: Tab::Image,
        ..Default::default()
    };
    let offscreen = Offscreen::new(setup.device, setup.queue, eframe::egui::Visuals::dark());
    let out = dir.join("overlays");
    std::fs::create_dir_all(&out).unwrap();
    let mut job = ExportJob::start(offscreen, doc, view, vec![1], out.clone(), Repaint::none());
    let outcome = loop {
        if let Some(outcome) = job.poll() {
            break outcome;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    outcome.expect("export");
    for head in 0..4 {
        let png = out.join(format!("L01_H{head:02}.png"));
        let img = image::open(&png).unwrap().to_rgba8();
        let distinct: std::collections::HashSet<[u8; 4]> = img.pixels().map(|p| p.0).collect();
        assert!(
            distinct.len() > 5_000,
            "{}: the picture under the overlay",
            png.display()
        );
    }
}

#[test]
fn attention_flow_equals_the_networkx_reference() {
    use headwise_engine::analysis::flow::attention_flow;
    use headwise_engine::analysis::rollout::RolloutSettings;
    let attention = Expected::load(&fixture("tiny-dinov2"));
    let layers: Vec<HostTensor> = (0..2)
        .map(|l| attention.get(&format!("attn/{l}")).clone())
        .collect();
    let t = layers[0].shape[1];
    let expected = Expected::load(&fixture("rollout"));
    let cases = expected.meta["flow"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for (i, case) in cases.iter().enumerate() {
        let settings = RolloutSettings {
            start_layer: case["start_layer"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let query = case["query"].as_u64().unwrap() as usize;
        let ours = attention_flow(&layers, &settings, query, &|_| {});
        assert_close(
            &format!("flow {case}"),
            &HostTensor::new(vec![t], ours),
            expected.get(&format!("flow/{i}")),
            1e-5,
        );
    }
}
