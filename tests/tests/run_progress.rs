//! A run's progress, layer by layer, and cancelling it between two layers of one pass: what a
//! long prompt's progress bar and Cancel button in the window (and the bar of `headwise trace`)
//! stand on.

use headwise_engine::device::DeviceChoice;
use headwise_engine::edits::Edit;
use headwise_engine::model::generation::Sampling;
use headwise_engine::pipeline::{self, Generation, Inputs, RunError, RunOptions, RunProgress};
use headwise_engine::{AttentionCapture, Model};
use headwise_tests::{fixture, fixture_allowing, load, scratch, wgpu_device};

/// Runs `texts` on `model`, recording every report; `stop_at` says which report answers
/// "stop".
fn run_recording(
    model: &Model,
    texts: &[&str],
    options: &RunOptions,
    stop_at: impl Fn(&RunProgress) -> bool,
) -> (Result<pipeline::Run, RunError>, Vec<RunProgress>) {
    let mut heard = Vec::new();
    let inputs = Inputs::Texts(texts.iter().map(|t| t.to_string()).collect());
    let result = pipeline::run(model, "m", &inputs, options, &mut |p| {
        heard.push(p.clone());
        !stop_at(p)
    });
    (result, heard)
}

fn layers_heard(heard: &[RunProgress], edited_pass: bool) -> Vec<usize> {
    heard
        .iter()
        .filter_map(|p| match p {
            RunProgress::Layer { layer, edited, .. } if *edited == edited_pass => Some(*layer),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_hears_every_layer_of_its_pass_in_order_before_the_input_is_finished() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let layers = model.config.layers;
    let (result, heard) = run_recording(
        &model,
        &["the cat sat on the mat"],
        &RunOptions::default(),
        |_| false,
    );
    assert!(result.is_ok());
    assert_eq!(layers_heard(&heard, false), (0..layers).collect::<Vec<_>>());
    assert!(
        matches!(heard.last(), Some(RunProgress::Finished(f)) if f.index == 0 && f.total == 1),
        "{heard:?}"
    );
    let fractions: Vec<f32> = heard.iter().map(RunProgress::fraction).collect();
    assert!(
        fractions.windows(2).all(|w| w[0] <= w[1]),
        "the bar never moves back: {fractions:?}"
    );
    assert_eq!(fractions[0], 0.0);
    assert_eq!(*fractions.last().unwrap(), 1.0);
    assert_eq!(heard[1].to_string(), format!("layer 2 of {layers}"));
}

#[test]
fn a_run_stopped_at_a_layer_is_cancelled_there_and_computes_no_layer_after_it() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let (result, heard) = run_recording(
        &model,
        &["the cat sat on the mat"],
        &RunOptions::default(),
        |p| matches!(p, RunProgress::Layer { layer: 1, .. }),
    );
    assert!(
        matches!(result, Err(RunError::Cancelled { done: 0, total: 1 })),
        "{:?}",
        result.err()
    );
    assert_eq!(
        layers_heard(&heard, false),
        [0, 1],
        "the pass stops before layer 1"
    );
    assert!(
        !heard.iter().any(|p| matches!(p, RunProgress::Finished(_))),
        "no input was finished: {heard:?}"
    );
}

#[test]
fn a_corpus_run_stopped_mid_pass_keeps_no_half_done_input() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let texts = ["one input", "another input", "a third input"];
    // Stop at the second input's last layer.
    let last = model.config.layers - 1;
    let (result, heard) = run_recording(
        &model,
        &texts,
        &RunOptions::default(),
        |p| matches!(p, RunProgress::Layer { inputs, layer, .. } if inputs.start == 1 && *layer == last),
    );
    assert!(
        matches!(result, Err(RunError::Cancelled { done: 1, total: 3 })),
        "{:?}",
        result.err()
    );
    let finished: Vec<usize> = heard
        .iter()
        .filter_map(|p| match p {
            RunProgress::Finished(f) => Some(f.index),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [0]);
    assert_eq!(
        heard.last().unwrap().to_string(),
        format!("layer {} of {}, input 2 of 3", last + 1, last + 1)
    );
}

#[test]
fn an_edited_run_reports_its_own_pass_and_is_cancelled_in_it() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let layers = model.config.layers;
    let options = RunOptions {
        edits: vec!["ablate:0.1".parse::<Edit>().unwrap()],
        ..RunOptions::default()
    };
    let (result, heard) = run_recording(&model, &["the cat sat on the mat"], &options, |_| false);
    assert_eq!(result.unwrap().session.meta.inputs.len(), 2);
    assert_eq!(layers_heard(&heard, true), (0..layers).collect::<Vec<_>>());
    let edited = heard
        .iter()
        .find(|p| matches!(p, RunProgress::Layer { edited: true, .. }))
        .unwrap();
    assert_eq!(
        edited.to_string(),
        format!("edited run, layer 1 of {layers}")
    );

    let (result, heard) = run_recording(&model, &["the cat sat on the mat"], &options, |p| {
        matches!(
            p,
            RunProgress::Layer {
                edited: true,
                layer: 0,
                ..
            }
        )
    });
    assert!(
        matches!(result, Err(RunError::Cancelled { done: 0, total: 1 })),
        "{:?}",
        result.err()
    );
    assert_eq!(layers_heard(&heard, true), [0]);
}

#[test]
fn continuing_a_text_reports_each_token_and_stops_between_tokens() {
    let model = load(&fixture("tiny-llama"), DeviceChoice::Cpu);
    let options = RunOptions {
        generate: Some(Generation {
            new_tokens: 6,
            sampling: Sampling::default(),
        }),
        ..RunOptions::default()
    };
    let (result, heard) = run_recording(&model, &["the cat"], &options, |p| {
        matches!(p, RunProgress::Generating { done: 2, .. })
    });
    assert!(
        matches!(result, Err(RunError::Cancelled { done: 0, total: 1 })),
        "{:?}",
        result.err()
    );
    let tokens: Vec<usize> = heard
        .iter()
        .filter_map(|p| match p {
            RunProgress::Generating { done, of, .. } => {
                assert_eq!(*of, 6);
                Some(*done)
            }
            _ => None,
        })
        .collect();
    assert_eq!(tokens, [1, 2], "no token after the one that said stop");
    assert!(
        layers_heard(&heard, false).is_empty(),
        "no pass was started"
    );
}

/// A copy of the tiny Llama that allows 1,024 positions.
fn long_tiny_llama() -> std::path::PathBuf {
    fixture_allowing("tiny-llama", 1024, &scratch("run-progress-long"))
}

/// From 512 tokens a watched pass waits for each layer's input before reporting it (on wgpu,
/// a read of one value that makes the device finish the layers queued before it); the report
/// order and the traces stay the same.
fn a_long_pass_is_reported_layer_by_layer_and_unchanged(device: DeviceChoice) {
    let model = load(&long_tiny_llama(), device);
    let text = ["a b c d e f g h"; 50].join(" ");
    let options = RunOptions {
        keep_traces: true,
        capture: AttentionCapture::None,
        ..RunOptions::default()
    };
    let (result, heard) = run_recording(&model, &[&text], &options, |_| false);
    let run = result.unwrap();
    assert!(run.session.meta.inputs[0].tokens.len() >= 512);
    assert_eq!(
        layers_heard(&heard, false),
        (0..model.config.layers).collect::<Vec<_>>()
    );
    let encoded = model.encode_all(&[text], Default::default()).unwrap();
    let input = headwise_engine::TokenInput::from(&encoded[0]);
    let unwatched = model
        .forward_many(&[input], 1, AttentionCapture::None, &mut |_| true)
        .unwrap();
    // On the CPU the same pass gives the same bits; on wgpu autotune may pick kernels that sum
    // in another order from one pass to the next (see long_context.rs).
    let tolerance = match device {
        DeviceChoice::Gpu => 1e-4,
        _ => 0.0,
    };
    for (watched, plain) in run.traces[0].layers.iter().zip(&unwatched[0].layers) {
        let a = headwise_engine::model::to_vec(watched.lse.clone()).unwrap();
        let b = headwise_engine::model::to_vec(plain.lse.clone()).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= tolerance,
            "watched and unwatched lse differ by {worst}"
        );
    }
}

#[test]
fn a_long_pass_reports_its_layers_and_gives_the_same_attention_as_an_unwatched_one() {
    a_long_pass_is_reported_layer_by_layer_and_unchanged(DeviceChoice::Cpu);
}

#[test]
fn a_long_pass_on_wgpu_reports_its_layers_and_gives_the_same_attention_as_an_unwatched_one() {
    if wgpu_device().is_none() {
        return;
    }
    a_long_pass_is_reported_layer_by_layer_and_unchanged(DeviceChoice::Gpu);
}
