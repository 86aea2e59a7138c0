//! `headwise trace` and `headwise models` from the command line: the session it writes, and a
//! clear message, a non-zero exit and no panic for every kind of bad input.

use headwise_tests::*;
use std::path::Path;

fn copy_fixture(name: &str, to: &Path) {
    copy_dir(&fixture(name), to);
}

fn trace(model: &Path, text: &str, home: &Path) -> std::process::Output {
    let out = home.join("out.safetensors");
    headwise(
        &[
            "trace",
            "--model",
            model.to_str().unwrap(),
            "--text",
            text,
            "--out",
            out.to_str().unwrap(),
        ],
        home,
    )
}

#[test]
fn trace_writes_a_session_with_every_input_of_a_corpus_file() {
    let home = scratch("cli-trace");
    let inputs = home.join("inputs.txt");
    std::fs::write(
        &inputs,
        "The quick brown fox.\n\nParis is the capital of France.\n",
    )
    .unwrap();
    let out = home.join("run.safetensors");
    let model = fixture("tiny-gpt2");
    let result = headwise(
        &[
            "trace",
            "--model",
            model.to_str().unwrap(),
            "--corpus",
            inputs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--dtype",
            "f16",
        ],
        &home,
    );
    assert_success(&result);
    let session = headwise_engine::session::Session::open(&out).unwrap();
    assert_eq!(session.meta.inputs.len(), 2, "the empty line is skipped");
    assert_eq!(
        session.meta.inputs[1].text.as_deref(),
        Some("Paris is the capital of France.")
    );
    assert_eq!(session.layers[1].len(), 2);
}

/// The window and `headwise trace --corpus` run a corpus file through the same pipeline: the
/// same inputs (lines trimmed, blank lines skipped) and the same session.
#[test]
fn a_corpus_file_gives_the_window_and_trace_the_same_inputs_and_session() {
    use headwise::gui::runs::corpus_options;
    use headwise_engine::pipeline::{self, Inputs};
    use headwise_engine::session::Session;
    let home = scratch("cli-corpus-agrees");
    let corpus = home.join("corpus.txt");
    std::fs::write(
        &corpus,
        "  The cat sat.  \n\n\tA dog ran.\r\n   \nBirds sing  \n",
    )
    .unwrap();
    let model = fixture("tiny-gpt2");
    let spec = model.to_str().unwrap();
    let out = home.join("trace.safetensors");
    assert_success(&headwise(
        &[
            "trace",
            "--model",
            spec,
            "--corpus",
            corpus.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
        &home,
    ));
    let traced = Session::open(&out).unwrap();

    let window_inputs = headwise::corpus::read(Some(&corpus), 400)
        .unwrap()
        .inputs(false);
    let expected = ["The cat sat.", "A dog ran.", "Birds sing"];
    assert_eq!(
        window_inputs,
        Inputs::Texts(expected.iter().map(|t| t.to_string()).collect())
    );
    let texts: Vec<_> = traced
        .meta
        .inputs
        .iter()
        .map(|i| i.text.clone().unwrap())
        .collect();
    assert_eq!(texts, expected, "trace --corpus reads the same inputs");

    let cpu = load(&model, headwise_engine::device::DeviceChoice::Cpu);
    let ran = pipeline::run(&cpu, spec, &window_inputs, &corpus_options(1), &mut |_| {
        true
    })
    .unwrap();
    assert_eq!(ran.session.meta.inputs, traced.meta.inputs);
    assert_eq!(ran.session.layers, traced.layers);
}

#[test]
fn missing_config_is_named() {
    let home = scratch("cli-no-config");
    // A folder name no other part of the message could contain.
    let model = home.join("bert-without-config");
    copy_fixture("tiny-bert", &model);
    std::fs::remove_file(model.join("config.json")).unwrap();
    assert_clean_failure(
        &trace(&model, "hello", &home),
        &["bert-without-config", "missing config.json"],
    );
}

#[test]
fn missing_weights_are_named() {
    let home = scratch("cli-no-weights");
    let model = home.join("model");
    copy_fixture("tiny-bert", &model);
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    assert_clean_failure(&trace(&model, "hello", &home), &["model.safetensors"]);
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let home = scratch("cli-model-type");
    let model = home.join("model");
    copy_fixture("tiny-bert", &model);
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        model.join("config.json"),
        config.replace("\"bert\"", "\"t5\""),
    )
    .unwrap();
    assert_clean_failure(
        &trace(&model, "hello", &home),
        &[
            "config.json",
            "'t5' is not supported",
            "bert",
            "gpt2",
            "llama",
            "qwen2",
        ],
    );
}

#[test]
fn truncated_and_corrupt_safetensors_are_clear_errors() {
    let home = scratch("cli-bad-safetensors");
    let model = home.join("model");
    copy_fixture("tiny-bert", &model);
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &trace(&model, "hello", &home),
        &["model.safetensors", "corrupt or truncated"],
    );
    std::fs::write(&weights, b"this is not a safetensors file at all").unwrap();
    assert_clean_failure(
        &trace(&model, "hello", &home),
        &["model.safetensors", "corrupt or truncated"],
    );
}

#[test]
fn truncated_and_corrupt_gguf_files_are_clear_errors() {
    let home = scratch("cli-bad-gguf");
    let bytes = std::fs::read(fixture("tiny-gguf").join("tiny-llama.Q4_1.gguf")).unwrap();
    for (name, content) in [
        ("half.gguf", bytes[..bytes.len() / 2].to_vec()),
        ("header.gguf", bytes[..300].to_vec()),
        ("magic.gguf", [b"GGUX".as_slice(), &bytes[4..]].concat()),
        ("empty.gguf", Vec::new()),
    ] {
        let path = home.join(name);
        std::fs::write(&path, content).unwrap();
        assert_clean_failure(
            &trace(&path, "hello", &home),
            &[name, "corrupt or truncated"],
        );
    }
}

#[test]
fn empty_prompt_is_refused() {
    let home = scratch("cli-empty");
    assert_clean_failure(
        &trace(&fixture("tiny-bert"), "   ", &home),
        &["input 0", "empty"],
    );
}

#[test]
fn prompt_longer_than_the_positions_is_refused_unless_truncation_is_asked_for() {
    let home = scratch("cli-long");
    let long = "the quick brown fox ".repeat(40);
    let model = fixture("tiny-bert");
    assert_clean_failure(&trace(&model, &long, &home), &["input 0", "64 positions"]);
    let out = home.join("t.safetensors");
    let result = headwise(
        &[
            "trace",
            "--model",
            model.to_str().unwrap(),
            "--text",
            &long,
            "--truncate",
            "--out",
            out.to_str().unwrap(),
        ],
        &home,
    );
    assert_success(&result);
    let session = headwise_engine::session::Session::open(&out).unwrap();
    assert_eq!(session.meta.inputs[0].token_ids.len(), 64);
}

#[test]
fn nonexistent_model_is_named_with_what_was_tried() {
    let home = scratch("cli-no-model");
    assert_clean_failure(
        &trace(Path::new("no/such/model/here"), "hi", &home),
        &["no/such/model/here"],
    );
    assert_clean_failure(
        &trace(Path::new("nonsense"), "hi", &home),
        &["nonsense", "minilm", "smollm2"],
    );
}

#[test]
fn models_list_names_the_fetchable_models_and_every_family_it_opens() {
    let home = scratch("cli-models");
    let out = headwise(&["models", "list"], &home);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("minilm") && stdout.contains("smollm2") && stdout.contains("not fetched"),
        "{stdout}"
    );
    for family in [
        "roberta",
        "distilbert",
        "modernbert",
        "qwen3",
        "phi3",
        "smollm3",
        "gemma2",
        "gemma3_text",
        "clip_vision_model",
        "siglip_vision_model",
        "olmo2",
    ] {
        assert!(stdout.contains(family), "{family} missing from: {stdout}");
    }
    let gguf = stdout
        .lines()
        .find(|l| l.contains("GGUF files"))
        .unwrap_or_else(|| panic!("no line of GGUF architectures in: {stdout}"));
    for architecture in [
        "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3",
    ] {
        assert!(
            gguf.contains(architecture),
            "{architecture} missing from: {gguf}"
        );
    }
}
