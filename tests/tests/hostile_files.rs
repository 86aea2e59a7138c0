//! Hostile files: every damaged input a mutation fuzzer found (issue 19) and then some, each
//! built here from the fixtures, must end in a clear error naming the file and the problem —
//! no panic, no abort, and no giant allocation on the way (the largest single allocation each
//! case asks for is measured). Then a deterministic mutation fuzzer over the session reader,
//! the safetensors, GGUF and ONNX readers, config parsing, the image decoder and the tokenizer
//! loader: a fixed number of cases here, more with `HEADWISE_FUZZ_CASES=N` (and another
//! `HEADWISE_FUZZ_SEED`). Finally, saves interrupted at any point leave the previous file intact.

use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::imaging::{ImageProcessor, decode_image};
use headwise_engine::model::config::ModelConfig;
use headwise_engine::pipeline::{self, Inputs, RunOptions};
use headwise_engine::session::{Session, StoreDtype};
use headwise_engine::tokenizer::TextTokenizer;
use headwise_engine::{EngineError, Model};
use headwise_tests::hostile::*;
use headwise_tests::*;
use serde_json::{Value, json};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// No single allocation of a refused file may ask for more than this: the fixtures are
/// kilobytes, and the giant requests the fuzzer found were gigabytes to terabytes.
const ALLOCATION_BOUND: usize = 256 << 20;

/// Runs `f`, which must fail: checks that it did not panic, that its largest allocation stayed
/// under [`ALLOCATION_BOUND`], and that its message holds every one of `needles`. Returns the
/// message.
fn refused<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
    needles: &[&str],
) -> String {
    let (outcome, largest) = largest_allocation(|| catch_unwind(AssertUnwindSafe(f)));
    let message = match outcome {
        Err(panic) => panic!("{what}: panicked: {}", panic_message(&panic)),
        Ok(Ok(_)) => panic!("{what}: accepted, but should be refused"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(
        largest <= ALLOCATION_BOUND,
        "{what}: asked for {largest} bytes at once before refusing: {message}"
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "{what}: the message lacks {needle:?}: {message}"
        );
    }
    message
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

fn load_model(path: &Path) -> Result<Model, EngineError> {
    let device = create_device(DeviceChoice::Cpu).unwrap();
    Model::load(path, &device.device, &|_| {})
}

/// Loading must fail; if the model loads, a forward pass shows what the missing check costs.
fn load_refused(what: &str, path: &Path, needles: &[&str]) -> String {
    refused(what, || load_model(path), needles)
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A text session (tiny Llama, two prompts) and an image session (tiny DINOv2, one picture),
/// traced once on the CPU and saved in this binary's scratch folder.
fn sessions() -> &'static (PathBuf, PathBuf) {
    static SESSIONS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    SESSIONS.get_or_init(|| {
        let dir = scratch("hostile-sessions");
        let run = |model: &str, inputs: Inputs, name: &str| {
            let model = load(&fixture(model), DeviceChoice::Cpu);
            let run = pipeline::run(&model, name, &inputs, &RunOptions::default(), &mut |_| true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let path = dir.join(name);
            run.session.save(&path, StoreDtype::F32).unwrap();
            path
        };
        let text = run(
            "tiny-llama",
            Inputs::Texts(vec!["The cat sat on the mat.".into(), "A dog.".into()]),
            "text.safetensors",
        );
        let image = run(
            "tiny-dinov2",
            Inputs::Images(vec![fixture("images").join("small.png")]),
            "image.safetensors",
        );
        (text, image)
    })
}

/// A copy of a session with its metadata and tensors edited, written to a scratch file.
fn edited_session(
    image: bool,
    case: &str,
    edit: impl FnOnce(&mut Value, &mut Safetensors),
) -> PathBuf {
    let (text, picture) = sessions();
    let mut file = Safetensors::read(if image { picture } else { text });
    let mut meta = file.session_meta();
    edit(&mut meta, &mut file);
    file.set_session_meta(&meta);
    let path = scratch(&format!("hostile-{case}")).join("edited.safetensors");
    file.write(&path);
    path
}

fn session_refused(path: &Path, needles: &[&str]) -> String {
    let message = refused("Session::open", || Session::open(path), needles);
    assert!(
        message.contains(&path.display().to_string()),
        "names the file: {message}"
    );
    message
}

#[test]
fn the_unedited_sessions_open() {
    let (text, image) = sessions();
    Session::open(text).unwrap();
    Session::open(image).unwrap();
}

#[test]
fn a_session_claiming_2_pow_40_layers_is_refused_without_allocating_for_them() {
    let path = edited_session(false, "layers", |meta, _| {
        meta["model"]["layers"] = json!(1u64 << 40);
        meta["model"]["attention"] = json!([]);
    });
    session_refused(&path, &["layers", "1099511627776"]);
}

#[test]
fn a_session_claiming_2_pow_40_heads_or_head_dim_is_refused() {
    for key in ["heads", "kv_heads", "head_dim"] {
        let path = edited_session(false, &format!("huge-{key}"), |meta, _| {
            meta["model"][key] = json!(1u64 << 40);
        });
        session_refused(&path, &[key]);
    }
}

#[test]
fn a_session_whose_kv_heads_do_not_divide_its_heads_is_refused() {
    // Query head h reads key head h / (heads / kv_heads): 4 / 8 would divide by zero.
    let path = edited_session(false, "grouping", |meta, file| {
        meta["model"]["kv_heads"] = json!(8);
        for (name, (_, shape, bytes)) in file.tensors.iter_mut() {
            if name.starts_with("k/") || name.starts_with("vnorm/") {
                // Eight key heads' worth of values, so that only the grouping is wrong.
                let per_head = bytes.len() / shape[0];
                *bytes = bytes[..per_head].repeat(8);
                shape[0] = 8;
            }
        }
    });
    session_refused(&path, &["kv_heads"]);
}

#[test]
fn a_session_whose_norms_have_the_wrong_length_is_refused() {
    let path = edited_session(true, "norms", |_, file| {
        let (_, shape, bytes) = file
            .tensors
            .get_mut("norms/0/0")
            .expect("image sessions keep norms");
        bytes.truncate(bytes.len() - 4);
        shape[0] -= 1;
    });
    session_refused(&path, &["norms/0/0"]);
}

#[test]
fn a_session_picture_with_4_channels_is_refused() {
    let path = edited_session(true, "channels", |_, file| {
        let (_, shape, bytes) = file.tensors.get_mut("image/0").unwrap();
        let rgba: Vec<u8> = bytes
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        *bytes = rgba;
        shape[2] = 4;
    });
    session_refused(&path, &["image/0"]);
}

#[test]
fn a_session_picture_of_0_by_0_is_refused() {
    let path = edited_session(true, "empty-picture", |_, file| {
        let (_, shape, bytes) = file.tensors.get_mut("image/0").unwrap();
        bytes.clear();
        *shape = vec![0, 0, 3];
    });
    session_refused(&path, &["image/0"]);
}

#[test]
fn a_session_patch_grid_of_0_by_0_is_refused() {
    let path = edited_session(true, "grid-zero", |meta, _| {
        let input = &mut meta["inputs"][0];
        let prefix = input["prefix_tokens"].as_u64().unwrap() as usize;
        input["patch_grid"] = json!([0, 0]);
        let tokens: Vec<Value> = input["tokens"].as_array().unwrap()[..prefix].to_vec();
        let ids: Vec<Value> = input["token_ids"].as_array().unwrap()[..prefix].to_vec();
        input["tokens"] = Value::Array(tokens);
        input["token_ids"] = Value::Array(ids);
    });
    session_refused(&path, &["patch_grid"]);
}

#[test]
fn a_session_patch_grid_whose_product_wraps_around_is_refused() {
    let path = edited_session(true, "grid-wraps", |meta, _| {
        // 2^32 × 2^32 wraps to 0 in 64 bits: with the prefix tokens it would "make" T.
        meta["inputs"][0]["patch_grid"] = json!([1u64 << 32, 1u64 << 32]);
    });
    session_refused(&path, &["patch_grid"]);
}

#[test]
fn a_session_patch_grid_larger_than_its_picture_is_refused() {
    let path = edited_session(true, "grid-outside", |meta, _| {
        meta["inputs"][0]["patch_size"] = json!([1000, 1000]);
    });
    session_refused(&path, &["patch"]);
}

#[test]
fn a_session_whose_tensors_disagree_with_its_metadata_is_refused() {
    let path = edited_session(false, "q-shape", |meta, _| {
        meta["model"]["head_dim"] = json!(16);
    });
    session_refused(&path, &["q/0/0"]);
}

#[test]
fn a_session_with_more_inputs_in_its_metadata_than_tensors_is_refused() {
    let path = edited_session(false, "inputs", |meta, _| {
        let first = meta["inputs"][0].clone();
        meta["inputs"].as_array_mut().unwrap().push(first);
    });
    session_refused(&path, &["2/0"]);
}

// ---------------------------------------------------------------------------------------------
// Pictures

fn small_png() -> Vec<u8> {
    std::fs::read(fixture("images").join("small.png")).unwrap()
}

/// small.png with its header declaring another size (the CRC fixed, so only the size is wrong).
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut chunks = png_chunks(&small_png());
    let ihdr = &mut chunks[0];
    assert_eq!(&ihdr.0, b"IHDR");
    ihdr.1[..4].copy_from_slice(&width.to_be_bytes());
    ihdr.1[4..8].copy_from_slice(&height.to_be_bytes());
    png_from_chunks(&chunks)
}

fn picture_refused(what: &str, bytes: &[u8], needles: &[&str]) -> String {
    let path = Path::new("picture-under-test.png");
    let message = refused(what, || decode_image(bytes, path), needles);
    assert!(
        message.contains("picture-under-test.png"),
        "names the file: {message}"
    );
    message
}

#[test]
fn a_png_declaring_100000_by_100000_pixels_is_refused_before_decoding() {
    picture_refused("100000² PNG", &png_declaring(100_000, 100_000), &["100000"]);
}

#[test]
fn a_jpeg_declaring_65535_by_65535_pixels_is_refused_before_decoding() {
    let mut jpeg = std::fs::read(fixture("images").join("rotated.jpg")).unwrap();
    // The frame header (SOF0..SOF2): FF Cx, length (2), precision (1), height (2), width (2).
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (0xC0..=0xC2).contains(&w[1]))
        .expect("a frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&65535u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&65535u16.to_be_bytes());
    picture_refused("65535² JPEG", &jpeg, &["65535"]);
}

#[test]
fn a_truncated_jpeg_is_refused() {
    let jpeg = std::fs::read(fixture("images").join("rotated.jpg")).unwrap();
    picture_refused("truncated JPEG", &jpeg[..jpeg.len() / 2], &[]);
}

#[test]
fn a_png_with_a_corrupt_idat_is_refused() {
    let mut chunks = png_chunks(&small_png());
    let idat = chunks.iter_mut().find(|(kind, _)| kind == b"IDAT").unwrap();
    let middle = idat.1.len() / 2;
    for b in &mut idat.1[middle..middle + 16] {
        *b ^= 0xA5;
    }
    // The CRC is recomputed: the damage is inside the compressed pixels.
    picture_refused("corrupt IDAT", &png_from_chunks(&chunks), &[]);
}

/// A PNG of width × height made by the image crate (one colour: it compresses to little).
fn encoded_png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 120, 40]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn a_1_by_100000_picture_is_refused_before_resizing_it_to_giant_intermediates() {
    let png = encoded_png(1, 100_000);
    assert!(png.len() < 256 << 10, "a small file: {} bytes", png.len());
    let dir = scratch("hostile-aspect");
    let path = dir.join("needle.png");
    std::fs::write(&path, &png).unwrap();
    let model = load(&fixture("tiny-dinov2"), DeviceChoice::Cpu);
    refused(
        "1 × 100000 picture",
        || {
            pipeline::run(
                &model,
                "m",
                &Inputs::Images(vec![path.clone()]),
                &RunOptions::default(),
                &mut |_| true,
            )
        },
        &["needle.png", "100000"],
    );
}

fn preprocessor_refused(edit: impl FnOnce(&mut Value), needles: &[&str]) -> String {
    let path = fixture("tiny-dinov2").join("preprocessor_config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    let message = refused(
        "preprocessor_config.json",
        || ImageProcessor::from_json(&json, &path),
        needles,
    );
    assert!(
        message.contains("preprocessor_config.json"),
        "names the file: {message}"
    );
    message
}

#[test]
fn a_crop_size_of_100000_is_refused() {
    preprocessor_refused(
        |j| j["crop_size"] = json!({"height": 100000, "width": 100000}),
        &["crop_size", "100000"],
    );
}

#[test]
fn a_resize_to_100000_is_refused() {
    preprocessor_refused(
        |j| j["size"] = json!({"shortest_edge": 100000}),
        &["size", "100000"],
    );
    preprocessor_refused(|j| j["size"] = json!({"height": 0, "width": 10}), &["size"]);
}

#[test]
fn an_image_std_of_0_is_refused() {
    preprocessor_refused(
        |j| j["image_std"] = json!([0.229, 0.0, 0.225]),
        &["image_std"],
    );
    preprocessor_refused(|j| j["image_std"] = json!(0), &["image_std"]);
}

// ---------------------------------------------------------------------------------------------
// config.json against the weights

/// A copy of fixture `name` with its config.json edited, in a scratch folder.
fn edited_config(name: &str, case: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let folder = scratch(&format!("hostile-{case}")).join(name);
    copy_dir(&fixture(name), &folder);
    let path = folder.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    folder
}

#[test]
fn a_head_dim_of_2_pow_40_is_refused_by_name() {
    let folder = edited_config("tiny-llama", "head-dim", |c| {
        c["head_dim"] = json!(1u64 << 40)
    });
    load_refused("head_dim 2^40", &folder, &["head_dim", "config.json"]);
}

#[test]
fn num_attention_heads_of_2_pow_40_is_refused_by_name() {
    for name in [
        "tiny-llama",
        "tiny-bert",
        "tiny-gpt2",
        "tiny-dinov2",
        "tiny-gemma2",
        "tiny-modernbert",
    ] {
        let folder = edited_config(name, &format!("heads-{name}"), |c| {
            for key in ["num_attention_heads", "n_head"] {
                if c.get(key).is_some() {
                    c[key] = json!(1u64 << 40);
                }
            }
        });
        load_refused(name, &folder, &["config.json"]);
    }
}

#[test]
fn num_hidden_layers_of_2_pow_40_is_refused_by_name() {
    for name in [
        "tiny-llama",
        "tiny-bert",
        "tiny-gpt2",
        "tiny-dinov2",
        "tiny-gemma2",
        "tiny-modernbert",
    ] {
        let folder = edited_config(name, &format!("layers-{name}"), |c| {
            for key in ["num_hidden_layers", "n_layer"] {
                if c.get(key).is_some() {
                    c[key] = json!(1u64 << 40);
                }
            }
        });
        load_refused(name, &folder, &["config.json"]);
    }
}

#[test]
fn a_head_dim_that_disagrees_with_the_weights_is_refused_at_load_not_after_tracing() {
    // 16 instead of 8: `trace` used to write a session that `render` then rejected.
    let folder = edited_config("tiny-llama", "head-dim-16", |c| c["head_dim"] = json!(16));
    load_refused("head_dim 16", &folder, &["q_proj"]);
}

#[test]
fn num_key_value_heads_that_disagree_with_the_weights_are_refused() {
    let folder = edited_config("tiny-llama", "kv-heads", |c| {
        c["num_key_value_heads"] = json!(4)
    });
    load_refused("num_key_value_heads 4", &folder, &["k_proj"]);
}

/// A copy of fixture `name` whose model.safetensors has tensor `tensor` reshaped to `shape`
/// (same bytes).
fn reshaped_weight(name: &str, tensor: &str, shape: &[usize]) -> PathBuf {
    let folder = scratch(&format!("hostile-weight-{name}")).join(name);
    copy_dir(&fixture(name), &folder);
    let path = folder.join("model.safetensors");
    let mut file = Safetensors::read(&path);
    let entry = file
        .tensors
        .get_mut(tensor)
        .unwrap_or_else(|| panic!("{name} has no {tensor}"));
    assert_eq!(
        entry.1.iter().product::<usize>(),
        shape.iter().product::<usize>(),
        "{tensor}: the same number of values"
    );
    entry.1 = shape.to_vec();
    file.write(&path);
    folder
}

#[test]
fn a_weight_of_the_wrong_shape_is_refused_naming_it_in_every_family() {
    let cases: &[(&str, &str, &[usize])] = &[
        (
            "tiny-bert",
            "encoder.layer.0.attention.self.key.weight",
            &[16, 64],
        ),
        (
            "tiny-bert",
            "encoder.layer.0.attention.self.key.bias",
            &[2, 16],
        ),
        (
            "tiny-bert",
            "encoder.layer.0.intermediate.dense.weight",
            &[32, 64],
        ),
        (
            "tiny-distilbert",
            "transformer.layer.0.attention.q_lin.weight",
            &[16, 64],
        ),
        ("tiny-gpt2", "transformer.h.0.attn.c_attn.weight", &[96, 32]),
        ("tiny-gpt2", "transformer.h.0.mlp.c_proj.weight", &[32, 128]),
        (
            "tiny-dinov2",
            "dinov2.encoder.layer.0.attention.attention.query.weight",
            &[16, 64],
        ),
        (
            "tiny-dinov2",
            "dinov2.encoder.layer.0.layer_scale1.lambda1",
            &[4, 8],
        ),
        (
            "tiny-dinov2",
            "dinov2.encoder.layer.0.mlp.fc2.weight",
            &[64, 32],
        ),
        ("tiny-modernbert", "layers.0.attn.Wqkv.weight", &[32, 96]),
        ("tiny-modernbert", "layers.0.mlp.Wo.weight", &[48, 32]),
        (
            "tiny-clip-vision",
            "encoder.layers.0.self_attn.q_proj.weight",
            &[16, 64],
        ),
        ("tiny-llama", "model.layers.0.mlp.down_proj.weight", &[2048]),
        (
            "tiny-llama",
            "model.layers.0.self_attn.k_proj.weight",
            &[32, 16],
        ),
        (
            "tiny-gemma2",
            "model.layers.0.self_attn.o_proj.weight",
            &[64, 32],
        ),
    ];
    let mut failures = Vec::new();
    for (name, tensor, shape) in cases {
        let folder = reshaped_weight(name, tensor, shape);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            load_refused(&format!("{name} {tensor} {shape:?}"), &folder, &[tensor])
        }));
        if let Err(panic) = outcome {
            failures.push(panic_message(&panic));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF

fn gguf_fixture() -> Gguf {
    Gguf::read(&fixture("tiny-gguf").join("tiny-llama.F32.gguf"))
}

fn gguf_refused(what: &str, file: &Gguf, needles: &[&str]) -> String {
    let path = scratch(&format!("hostile-gguf-{}", what.replace(' ', "-"))).join("edited.gguf");
    file.write(&path);
    let message = load_refused(what, &path, needles);
    assert!(
        message.contains(&path.display().to_string()),
        "names the file: {message}"
    );
    message
}

#[test]
fn the_rewritten_gguf_fixture_still_loads() {
    let path = scratch("hostile-gguf-roundtrip").join("same.gguf");
    gguf_fixture().write(&path);
    load_model(&path).unwrap();
}

#[test]
fn a_gguf_block_count_of_2_pow_64_minus_1_is_refused() {
    let mut file = gguf_fixture();
    file.set_u64("llama.block_count", u64::MAX);
    gguf_refused("block count", &file, &["block_count"]);
}

#[test]
fn gguf_head_counts_and_key_length_that_disagree_with_the_tensors_are_refused() {
    for (key, value) in [
        ("llama.attention.key_length", 16u64),
        ("llama.attention.head_count_kv", 4),
        ("llama.attention.head_count", 2),
        ("llama.embedding_length", 64),
        ("llama.feed_forward_length", 128),
        ("llama.vocab_size", 800),
        ("llama.attention.head_count", 1 << 40),
    ] {
        let mut file = gguf_fixture();
        file.set_u64(key, value);
        if key == "llama.attention.key_length" {
            file.set_u64("llama.rope.dimension_count", value);
        }
        gguf_refused(&format!("{key} {value}"), &file, &[]);
    }
}

#[test]
fn a_gguf_array_retyped_to_cover_the_rest_of_the_file_is_refused_within_bounds() {
    let file = gguf_fixture();
    let total = file.bytes().len() as u64;
    // tokenizer.ggml.tokens: array of strings → array of bytes as long as the whole file.
    let (_, _, value) = file.value("tokenizer.ggml.tokens").unwrap().clone();
    let mut retyped = value.clone();
    retyped[..4].copy_from_slice(&0u32.to_le_bytes());
    retyped[4..12].copy_from_slice(&total.to_le_bytes());
    let mut bytes = file.bytes();
    let at = bytes
        .windows(value.len())
        .position(|w| w == value.as_slice())
        .unwrap();
    bytes[at..at + 12].copy_from_slice(&retyped[..12]);
    let path = scratch("hostile-gguf-array").join("edited.gguf");
    std::fs::write(&path, &bytes).unwrap();
    load_refused("retyped array", &path, &[]);
    // Covering exactly what is left of the file: the array itself is readable; what follows it
    // is not.
    let left = (bytes.len() - at - 12) as u64;
    bytes[at + 4..at + 12].copy_from_slice(&left.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    load_refused("retyped array to the end", &path, &[]);
}

#[test]
fn a_gguf_tensor_whose_elements_or_bytes_multiply_past_64_bits_is_refused() {
    // 2^64 elements; then 2^62 elements, whose 2^64 bytes as F32 overflow (found by the fuzzer).
    for dims in [vec![1 << 32, 1 << 32], vec![1 << 31, 1 << 31]] {
        let mut file = gguf_fixture();
        file.tensor_mut("blk.0.attn_q.weight").1 = dims.clone();
        gguf_refused(
            &format!("tensor dims {dims:?}"),
            &file,
            &["blk.0.attn_q.weight"],
        );
    }
}

/// A tensor of a family GGUF file one row short (stored dims are fastest first: the rows are
/// the second).
fn one_row_short(file: &str, tensor: &str) -> Gguf {
    let mut gguf = Gguf::read(&fixture("tiny-gguf").join(file));
    let t = gguf.tensor_mut(tensor);
    let last = t.1.len() - 1;
    t.1[last] -= 1;
    let count: u64 = t.1.iter().product();
    t.3.truncate(count as usize * 4);
    gguf
}

#[test]
fn a_phi3_gguf_whose_fused_tensors_do_not_split_into_their_parts_is_refused_by_name() {
    for (tensor, weight) in [
        ("blk.0.attn_qkv.weight", "qkv_proj"),
        ("blk.1.ffn_up.weight", "gate_up_proj"),
    ] {
        let file = one_row_short("tiny-phi3.F32.gguf", tensor);
        gguf_refused(&format!("phi3 {tensor}"), &file, &[weight, "shape"]);
    }
}

#[test]
fn a_gguf_whose_per_head_norms_disagree_with_the_head_width_is_refused_by_name() {
    for (file, tensor, weight) in [
        ("tiny-qwen3.F32.gguf", "blk.1.attn_k_norm.weight", "k_norm"),
        ("tiny-gemma3.F16.gguf", "blk.0.attn_q_norm.weight", "q_norm"),
    ] {
        let file = one_row_short(file, tensor);
        gguf_refused(&format!("norm {tensor}"), &file, &[weight, "shape"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

#[test]
fn a_tokenizer_whose_post_processor_names_no_special_tokens_is_refused() {
    for name in ["tiny-bert", "tiny-llama"] {
        let dir = scratch(&format!("hostile-tokenizer-{name}"));
        let path = dir.join("tokenizer.json");
        let mut json: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("tokenizer.json")).unwrap(),
        )
        .unwrap();
        json["post_processor"]["special_tokens"] = json!({});
        std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
        // Encoding is where the tokenizers crate would panic, so the refusal must come first.
        let message = refused(
            name,
            || TextTokenizer::from_file(&path).and_then(|t| t.encode("a test")),
            &["tokenizer.json", "special"],
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering pictures the GPU cannot hold

#[test]
fn rendering_a_session_whose_picture_is_wider_than_the_gpu_texture_limit_does_not_panic() {
    if wgpu_device().is_none() {
        return;
    }
    // 1 × 20000 pixels: over 16384, the largest texture side most GPUs (and lavapipe) allow;
    // its one patch still lies inside it.
    let path = edited_session(true, "wide-picture", |_, file| {
        let (_, shape, bytes) = file.tensors.get_mut("image/0").unwrap();
        let (height, width) = (shape[0], 20_000);
        *bytes = vec![90; height * width * 3];
        *shape = vec![height, width, 3];
    });
    let out = path.with_extension("png");
    let args = headwise::cli::render::RenderArgs {
        session: path.clone(),
        view: "image:0.0".into(),
        out: out.clone(),
        input: None,
        width: None,
        height: None,
        scale: 1.0,
        colormap: None,
        log: false,
        method: None,
        dims: None,
        value_weighted: false,
        metric: None,
        gradients: false,
        overlay: None,
    };
    match catch_unwind(AssertUnwindSafe(|| headwise::cli::render::run(args))) {
        Err(panic) => panic!("render panicked: {}", panic_message(&panic)),
        Ok(Ok(())) => assert!(image::open(&out).is_ok(), "drew a PNG"),
        Ok(Err(e)) => assert!(
            format!("{e:#}").contains("image/0"),
            "a clear refusal: {e:#}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Configs parsed alone

#[test]
fn a_config_of_sizes_past_any_model_is_refused_for_every_size_key() {
    let path = fixture("tiny-llama").join("config.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in [
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_size",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "head_dim",
    ] {
        let mut edited = json.clone();
        edited[key] = json!(u64::MAX);
        refused(key, || ModelConfig::from_json(&edited, &path), &[key]);
    }
}

// ---------------------------------------------------------------------------------------------
// Saving

/// A session saved over a file that exists, with the write made to fail, must leave the file
/// as it was and no temporary file behind.
#[test]
fn a_save_that_cannot_complete_leaves_the_previous_file_intact() {
    let (text, _) = sessions();
    let session = Session::open(text).unwrap();
    let dir = scratch("hostile-save");
    let path = dir.join("kept.safetensors");
    std::fs::copy(text, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A directory where the temporary file would go: the write fails at the first byte.
    let blocker = dir.join(format!(".kept.safetensors.{}.tmp", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    assert!(session.save(&path, StoreDtype::F16).is_err());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the previous file is intact"
    );
    std::fs::remove_dir(&blocker).unwrap();
    // A read-only folder: nothing can be created beside the file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let readonly = session.save(&path, StoreDtype::F16);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Root ignores permissions: then the save succeeds, atomically, and that is fine too.
        if readonly.is_err() {
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }
    }
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
}

/// Every prefix of a session file (what a crash mid-write would leave, were saves not atomic)
/// is refused cleanly when opened.
#[test]
fn every_truncation_of_a_session_is_refused_cleanly() {
    let (text, image) = sessions();
    for source in [text, image] {
        let bytes = std::fs::read(source).unwrap();
        let dir = scratch("hostile-truncations");
        let path = dir.join("cut.safetensors");
        let step = (bytes.len() / 200).max(1);
        for len in (0..bytes.len()).step_by(step) {
            std::fs::write(&path, &bytes[..len]).unwrap();
            refused(
                &format!("{len} of {} bytes", bytes.len()),
                || Session::open(&path),
                &[],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks refuse nothing real

/// Every fixture model (folders, GGUF and ONNX files) and every fetched real model still loads
/// under the shape and size checks above.
#[test]
fn every_fixture_and_real_model_still_loads_under_the_checks() {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.join("config.json").exists()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tiny-"))
        {
            paths.push(path);
        }
    }
    for entry in std::fs::read_dir(fixture("tiny-gguf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gguf") {
            paths.push(path);
        }
    }
    paths.push(fixture("tiny-dinov2-onnx").join("model.onnx"));
    for name in ["minilm", "smollm2", "dinov2-s"] {
        if let Some(path) = real_model(name) {
            paths.push(path);
        }
    }
    assert!(paths.len() > 20, "found the fixtures: {paths:?}");
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| load_model(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A session open in the app whose file is then rewritten or truncated in place by another
/// program (not by headwise, which replaces files by renaming) keeps reading what it opened.
#[test]
fn a_session_file_truncated_or_overwritten_while_open_does_not_reach_the_open_session() {
    let (_, image) = sessions();
    let dir = scratch("hostile-changed-on-disk");
    let path = dir.join("open.safetensors");
    std::fs::copy(image, &path).unwrap();
    let session = Session::open(&path).unwrap();
    let before: Vec<f32> = session
        .layers
        .iter()
        .flatten()
        .flat_map(|l| l.full().data.iter().chain(l.q.data.iter()).copied())
        .collect();
    // Truncated in place (the same inode), then overwritten with other bytes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(16)
        .unwrap();
    let after: Vec<f32> = session
        .layers
        .iter()
        .flatten()
        .flat_map(|l| l.full().data.iter().chain(l.q.data.iter()).copied())
        .collect();
    assert_eq!(before, after);
    std::fs::write(&path, vec![0xAB; 4096]).unwrap();
    assert!(
        session
            .image(0)
            .is_some_and(|p| p.pixels.len() == p.width * p.height * 3)
    );
    let again: f32 = session
        .layers
        .iter()
        .flatten()
        .map(|l| l.full().data.iter().sum::<f32>())
        .sum();
    assert!(again.is_finite());
    refused("the damaged file", || Session::open(&path), &[]);
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: random mutations of the fixtures through every reader

/// Where a fuzz target found a panic or an oversized allocation: the case (rerun it with the
/// same `HEADWISE_FUZZ_SEED`) and what happened.
struct Finding {
    case: usize,
    what: String,
}

/// Runs `cases` mutations through `run`, each under `catch_unwind` and the allocation measure.
/// The case about to run is written to `scratch/fuzz-last-{name}` first, so that an abort (which
/// no test can catch) still says which case it was. Prints the executions and time.
fn fuzz(name: &str, default_cases: usize, run: impl Fn(&mut Rng, &Path)) {
    let cases = fuzz_cases(default_cases);
    let seed = fuzz_seed();
    let dir = scratch(&format!("fuzz-{name}"));
    let last = dir.join("last-case");
    let started = std::time::Instant::now();
    let mut findings = Vec::new();
    for case in 0..cases {
        std::fs::write(&last, format!("seed {seed} case {case}\n")).unwrap();
        let mut rng =
            Rng::new(seed ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hash(name));
        let (outcome, largest) =
            largest_allocation(|| catch_unwind(AssertUnwindSafe(|| run(&mut rng, &dir))));
        if let Err(panic) = outcome {
            findings.push(Finding {
                case,
                what: format!("panic: {}", panic_message(&panic)),
            });
        } else if largest > ALLOCATION_BOUND {
            findings.push(Finding {
                case,
                what: format!("asked for {largest} bytes at once"),
            });
        }
    }
    eprintln!(
        "fuzz {name}: {cases} executions in {:.1} s (seed {seed}), {} findings",
        started.elapsed().as_secs_f64(),
        findings.len()
    );
    let shown: Vec<String> = findings
        .iter()
        .take(20)
        .map(|f| format!("case {}: {}", f.case, f.what))
        .collect();
    assert!(
        findings.is_empty(),
        "fuzz {name}: {} findings (seed {seed}):\n{}",
        findings.len(),
        shown.join("\n")
    );
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// After a mutated model loaded, a forward pass on a short input must not panic either.
fn exercise(model: &Model) {
    if model.takes_images() {
        let picture =
            headwise_engine::imaging::load_image(&fixture("images").join("small.png")).unwrap();
        if let Ok(prepared) = model.prepare_image(0, &picture) {
            let _ = model.forward_image(&headwise_engine::PixelInput::from(&prepared));
        }
    } else if let Ok(encoded) = model.encode(
        0,
        "The cat sat on the mat.",
        headwise_engine::LongInput::Truncate,
    ) {
        let _ = model.forward(&headwise_engine::TokenInput::from(&encoded));
    }
}

#[test]
fn fuzz_the_session_reader() {
    let (text, image) = sessions();
    let sources = [std::fs::read(text).unwrap(), std::fs::read(image).unwrap()];
    let files = [Safetensors::read(text), Safetensors::read(image)];
    fuzz("sessions", 3000, |rng, dir| {
        let which = rng.below(2);
        let path = dir.join("case.safetensors");
        if rng.below(2) == 0 {
            std::fs::write(&path, mutate(&sources[which], rng)).unwrap();
        } else {
            // The metadata's JSON edited, the tensors left whole: past the safetensors checks.
            let mut file = files[which].clone();
            let meta = mutate_json(&file.session_meta(), rng);
            file.set_session_meta(&meta);
            file.write(&path);
        }
        if let Ok(session) = Session::open(&path) {
            // What the views read first.
            for i in 0..session.meta.inputs.len() {
                let _ = session.image(i);
                let _ = session.lse(i, 0);
                let _ = session.token_norms(i, 0);
            }
            let _ = session.corpus_tokens();
        }
    });
}

#[test]
fn fuzz_the_image_decoder_and_preprocessing() {
    let images = fixture("images");
    let sources: Vec<Vec<u8>> = [
        "small.png",
        "rotated.jpg",
        "lossless.webp",
        "gray16.png",
        "rgba.png",
    ]
    .iter()
    .map(|n| std::fs::read(images.join(n)).unwrap())
    .collect();
    let processor =
        ImageProcessor::from_json_file(&fixture("tiny-dinov2").join("preprocessor_config.json"))
            .unwrap();
    fuzz("images", 2000, |rng, _| {
        let source = &sources[rng.below(sources.len())];
        let bytes = mutate(source, rng);
        if let Ok(picture) = decode_image(&bytes, Path::new("case.png"))
            && processor.check_size(picture.width, picture.height).is_ok()
        {
            let _ = processor.prepare(&picture);
        }
    });
}

#[test]
fn fuzz_preprocessor_configs() {
    let path = fixture("tiny-dinov2").join("preprocessor_config.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let picture =
        headwise_engine::imaging::load_image(&fixture("images").join("small.png")).unwrap();
    fuzz("preprocessor", 1500, |rng, _| {
        let edited = mutate_json(&json, rng);
        if let Ok(processor) = ImageProcessor::from_json(&edited, &path)
            && processor.check_size(picture.width, picture.height).is_ok()
        {
            let _ = processor.prepare(&picture);
        }
    });
}

#[test]
fn fuzz_tokenizer_files() {
    let sources: Vec<Value> = ["tiny-bert", "tiny-llama", "tiny-gpt2", "tiny-modernbert"]
        .iter()
        .map(|n| {
            serde_json::from_str(
                &std::fs::read_to_string(fixture(n).join("tokenizer.json")).unwrap(),
            )
            .unwrap()
        })
        .collect();
    fuzz("tokenizers", 600, |rng, dir| {
        let path = dir.join("tokenizer.json");
        let edited = mutate_json(&sources[rng.below(sources.len())], rng);
        std::fs::write(&path, serde_json::to_string(&edited).unwrap()).unwrap();
        if let Ok(tokenizer) = TextTokenizer::from_file(&path) {
            let _ = tokenizer.encode("The cat sat on the mat, naïvely: 42!");
        }
    });
}

#[test]
fn fuzz_configs_through_loading_and_a_forward_pass() {
    let names = [
        "tiny-llama",
        "tiny-bert",
        "tiny-distilbert",
        "tiny-gpt2",
        "tiny-dinov2",
        "tiny-gemma2",
        "tiny-modernbert",
        "tiny-clip-vision",
        "tiny-qwen3",
    ];
    let configs: Vec<Value> = names
        .iter()
        .map(|n| {
            serde_json::from_str(&std::fs::read_to_string(fixture(n).join("config.json")).unwrap())
                .unwrap()
        })
        .collect();
    fuzz("configs", 600, |rng, dir| {
        let which = rng.below(names.len());
        let folder = dir.join(names[which]);
        if !folder.exists() {
            copy_dir(&fixture(names[which]), &folder);
        }
        let edited = mutate_json(&configs[which], rng);
        std::fs::write(
            folder.join("config.json"),
            serde_json::to_string(&edited).unwrap(),
        )
        .unwrap();
        if let Ok(model) = load_model(&folder) {
            exercise(&model);
        }
    });
}

#[test]
fn fuzz_safetensors_weights() {
    let names = ["tiny-llama", "tiny-bert", "tiny-dinov2", "tiny-gpt2"];
    let sources: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(fixture(n).join("model.safetensors")).unwrap())
        .collect();
    fuzz("safetensors", 400, |rng, dir| {
        let which = rng.below(names.len());
        let folder = dir.join(names[which]);
        if !folder.exists() {
            copy_dir(&fixture(names[which]), &folder);
        }
        // Mutations aimed at the header, where the shapes and offsets are.
        let source = &sources[which];
        let header = 8 + u64::from_le_bytes(source[..8].try_into().unwrap()) as usize;
        let mut bytes = mutate(&source[..header.min(source.len())], rng);
        bytes.extend_from_slice(&source[header.min(source.len())..]);
        std::fs::write(folder.join("model.safetensors"), bytes).unwrap();
        if let Ok(model) = load_model(&folder) {
            exercise(&model);
        }
    });
}

#[test]
fn fuzz_gguf_files() {
    let source = std::fs::read(fixture("tiny-gguf").join("tiny-llama.Q8_0.gguf")).unwrap();
    let file = Gguf::read(&fixture("tiny-gguf").join("tiny-llama.Q8_0.gguf"));
    // The header (metadata and tensor directory) ends where the first tensor's data begins.
    let header = source.len()
        - file
            .tensors
            .iter()
            .map(|t| t.3.len().div_ceil(32) * 32)
            .sum::<usize>();
    fuzz("gguf", 800, |rng, dir| {
        let path = dir.join("case.gguf");
        let mut bytes = if rng.below(4) == 0 {
            mutate(&source, rng)
        } else {
            let mut b = mutate(&source[..header], rng);
            b.extend_from_slice(&source[header..]);
            b
        };
        if rng.below(8) == 0 {
            // A metadata integer set to an interesting value, the file otherwise well formed.
            let mut edited = file.clone();
            let ints: Vec<String> = edited
                .kv
                .iter()
                .filter(|(_, k, _)| *k == 4)
                .map(|(n, _, _)| n.clone())
                .collect();
            let key = &ints[rng.below(ints.len())];
            edited.set_u64(key, INTERESTING[rng.below(INTERESTING.len())]);
            bytes = edited.bytes();
        }
        std::fs::write(&path, bytes).unwrap();
        if let Ok(model) = load_model(&path) {
            exercise(&model);
        }
    });
}

#[test]
fn fuzz_onnx_graphs() {
    let source = std::fs::read(fixture("tiny-dinov2-onnx").join("model.onnx")).unwrap();
    let names = onnx_initializers(&source);
    fuzz("onnx", 250, |rng, dir| {
        let path = dir.join("case.onnx");
        let bytes = if rng.below(3) == 0 {
            // An initializer's dims replaced, the graph otherwise well formed.
            let name = &names[rng.below(names.len())];
            let dims: Vec<u64> = (0..1 + rng.below(4))
                .map(|_| [0, 1, 2, 4, 8, 16, 32, 64, 1 << 32][rng.below(9)])
                .collect();
            onnx_with_dims(&source, name, &dims).0
        } else {
            mutate(&source, rng)
        };
        std::fs::write(&path, bytes).unwrap();
        if let Ok(model) = load_model(&path) {
            exercise(&model);
        }
    });
}

/// A save that fails after N bytes, at every stage of writing the file: run in a child process
/// whose file-size limit (`ulimit -f`, with SIGXFSZ ignored so the write fails with EFBIG
/// instead of killing it) stops the temporary file at N KiB. The previous file is intact each
/// time, and no temporary file is left behind.
#[test]
fn a_save_cut_off_after_any_number_of_bytes_leaves_the_previous_file_intact() {
    let (text, image) = sessions();
    let size = std::fs::metadata(image).unwrap().len();
    let exe = std::env::current_exe().unwrap();
    let dir = scratch("hostile-save-cut");
    let mut cuts = 0;
    for kib in [1, 4, size / 1024 / 2, size / 1024 - 1] {
        let path = dir.join(format!("kept-{kib}.safetensors"));
        std::fs::copy(text, &path).unwrap();
        let script = format!(
            "trap '' XFSZ; ulimit -f {kib}; exec \"$0\" --exact --ignored --nocapture \
             save_under_a_file_size_limit"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg(&exe)
            .env("HEADWISE_SAVE_OVER", &path)
            .env("HEADWISE_SAVE_FROM", image)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child at {kib} KiB: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(text).unwrap(),
            "{kib} KiB"
        );
        cuts += 1;
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), cuts, "no temporary files: {left:?}");
}

/// The child of the test above: saves `HEADWISE_SAVE_FROM` over `HEADWISE_SAVE_OVER`, which must
/// fail (the file-size limit is smaller than the session).
#[test]
#[ignore = "run by a_save_cut_off_after_any_number_of_bytes_leaves_the_previous_file_intact"]
fn save_under_a_file_size_limit() {
    let (Some(over), Some(from)) = (
        std::env::var_os("HEADWISE_SAVE_OVER"),
        std::env::var_os("HEADWISE_SAVE_FROM"),
    ) else {
        return;
    };
    let session = Session::from_bytes(&std::fs::read(&from).unwrap(), Path::new(&from)).unwrap();
    let result = session.save(Path::new(&over), StoreDtype::F32);
    assert!(
        result.is_err(),
        "the save should have hit the file-size limit"
    );
    eprintln!("refused as expected: {}", result.unwrap_err());
}

// ---------------------------------------------------------------------------------------------
// ONNX weights against the config

#[test]
fn the_rewritten_onnx_fixture_still_loads() {
    let source = std::fs::read(fixture("tiny-dinov2-onnx").join("model.onnx")).unwrap();
    let names = onnx_initializers(&source);
    let scale = names
        .iter()
        .find(|n| n.ends_with("layer_scale1.lambda1"))
        .expect("a LayerScale");
    let (same, _) = onnx_with_dims(&source, scale, &[32]);
    assert_eq!(
        same.len(),
        source.len(),
        "dims [32] written back as they were"
    );
    let path = scratch("hostile-onnx-roundtrip").join("model.onnx");
    std::fs::write(&path, same).unwrap();
    load_model(&path).unwrap();
}

#[test]
fn an_onnx_layer_scale_of_another_rank_or_a_weight_of_another_shape_is_refused() {
    let source = std::fs::read(fixture("tiny-dinov2-onnx").join("model.onnx")).unwrap();
    let names = onnx_initializers(&source);
    // A MatMul weight (stored [in, out]) reshaped: which one depends on the exporter's numbering.
    let matmul = names
        .iter()
        .find(|n| n.starts_with("onnx::MatMul"))
        .expect("a MatMul weight");
    for (suffix, dims, needle) in [
        (
            "layer_scale1.lambda1",
            vec![4u64, 8],
            "layer_scale1.lambda1",
        ),
        (matmul.as_str(), vec![16, 64], "weight"),
    ] {
        let (bytes, name) = onnx_with_dims(&source, suffix, &dims);
        let path =
            scratch(&format!("hostile-onnx-{}", needle.replace('.', "-"))).join("model.onnx");
        std::fs::write(&path, bytes).unwrap();
        let message = load_refused(&format!("{name} as {dims:?}"), &path, &[needle]);
        assert!(message.contains("model.onnx"), "names the file: {message}");
    }
}
