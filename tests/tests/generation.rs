//! Continuing a text: SmolLM2's greedy continuation equals transformers' `generate` token for
//! token (scripts/make_edit_fixtures.py stores it), decoding with a KV cache gives the tokens a
//! full pass per token gives (greedy and seeded sampling), and `headwise trace --generate`
//! traces prompt and continuation and marks the generated tokens.

use headwise_engine::device::DeviceChoice;
use headwise_engine::model::generation::Sampling;
use headwise_tests::*;
use std::sync::atomic::AtomicBool;

#[test]
fn smollm2_greedy_continuations_equal_transformers_generate() {
    let Some(path) = real_model("smollm2") else {
        return;
    };
    let model = load(&path, DeviceChoice::Cpu);
    assert!(model.generates_with_cache(64));
    let expected = Expected::load_file(&fixture("real/smollm2").join("edits.safetensors"));
    let greedy = expected.meta["greedy"]
        .as_array()
        .expect("greedy references");
    assert!(greedy.len() >= 2);
    for case in greedy {
        let ids = |key: &str| -> Vec<u32> {
            case[key]
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt = ids("prompt_ids");
        let want = ids("generated");
        let got = model
            .generate(
                &prompt,
                32,
                Sampling::default(),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(got, want, "prompt {prompt:?}");
    }
}

#[test]
fn decoding_with_a_kv_cache_gives_the_tokens_of_a_full_pass_per_token() {
    for name in [
        "tiny-llama",
        "tiny-qwen3",
        "tiny-mistral-window",
        "tiny-olmo2",
    ] {
        let model = load(&fixture(name), DeviceChoice::Cpu);
        let prompt = model
            .encode(0, "The quick brown fox", Default::default())
            .unwrap()
            .ids;
        let never = AtomicBool::new(false);
        for sampling in [
            Sampling::default(),
            Sampling {
                temperature: 0.8,
                seed: 3,
            },
        ] {
            let n = 40.min(model.config.max_positions - prompt.len());
            let cached = model
                .generate_with(&prompt, n, sampling, true, &never, &mut |_| {})
                .unwrap();
            let full = model
                .generate_with(&prompt, n, sampling, false, &never, &mut |_| {})
                .unwrap();
            assert_eq!(cached, full, "{name} {sampling:?}");
            assert!(!cached.is_empty());
        }
    }
}

#[test]
fn trace_generate_traces_prompt_and_continuation_and_marks_the_generated_tokens() {
    use headwise_engine::session::Session;
    let dir = scratch("trace-generate");
    let folder = fixture("tiny-llama");
    let path = trace_to(
        &dir,
        &folder,
        &["--text", "The quick brown fox", "--generate", "12"],
        "gen.safetensors",
    );
    let session = Session::open(&path).unwrap();
    let input = &session.meta.inputs[0];
    let generated = input.generated.expect("generated tokens marked");
    assert!((1..=12).contains(&generated));
    let model = load(&folder, DeviceChoice::Cpu);
    let prompt = model
        .encode(0, "The quick brown fox", Default::default())
        .unwrap()
        .ids;
    assert_eq!(input.token_ids.len(), prompt.len() + generated);
    assert_eq!(&input.token_ids[..prompt.len()], &prompt[..]);
    let t = input.tokens.len();
    assert_eq!(
        session.layers[0][0].attn.as_ref().unwrap().shape,
        vec![4, t, t]
    );
    // The head view marks them: their labels and the line where they start in their colour.
    let img = render(&dir, &path, "head:1.0", "head.png");
    let [r, g, b, _] = headwise::views::head::GENERATED.to_array();
    let marked = img.pixels().filter(|p| p.0[..3] == [r, g, b]).count();
    assert!(
        marked > 50,
        "{marked} pixels in the generated tokens' colour"
    );
    let out = headwise(
        &[
            "trace",
            "--model",
            fixture("tiny-bert").to_str().unwrap(),
            "--text",
            "a b",
            "--generate",
            "3",
        ],
        &dir,
    );
    assert_clean_failure(&out, &["decoder"]);
}

/// `--generate N` continues by up to N tokens: a prompt near the model's last position is
/// continued as far as the positions go, not refused.
#[test]
fn a_continuation_stops_at_the_models_last_position() {
    use headwise_engine::pipeline::{self, Generation, Inputs, RunOptions};
    let folder = fixture("tiny-llama");
    let model = load(&folder, DeviceChoice::Cpu);
    let limit = model.config.max_positions;
    let tokens = |text: &str| model.encode(0, text, Default::default()).unwrap().ids.len();
    let mut text = String::from("The quick brown fox");
    while tokens(&text) < limit - 5 {
        text.push_str(" jumps");
    }
    let prompt = tokens(&text);
    assert!(prompt < limit);
    let options = RunOptions {
        generate: Some(Generation {
            new_tokens: 20,
            sampling: Default::default(),
        }),
        ..Default::default()
    };
    let run = pipeline::run(
        &model,
        "tiny-llama",
        &Inputs::Texts(vec![text]),
        &options,
        &mut |_| true,
    )
    .unwrap();
    let input = &run.session.meta.inputs[0];
    let generated = input.generated.expect("generated tokens marked");
    // Greedy decoding of a random model may end the text early, never go past the positions.
    assert!(generated <= limit - prompt, "{generated} new tokens");
    assert_eq!(input.token_ids.len(), prompt + generated);
    assert!(input.token_ids.len() <= limit);
}
