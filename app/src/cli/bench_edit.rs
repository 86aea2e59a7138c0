//! `headwise bench edit`: the time from an edit to the redrawn comparison, as the window spends
//! it with the model already loaded: the prompt run as it is and again with the edits (the
//! window re-runs both), the document made from the session, and the head overview coloured by
//! each head's change drawn offscreen by the window's own code and shaders.

use super::bench::{TEXT, median};
use super::progress::load_model;
use crate::document::Document;
use crate::render::offscreen::Offscreen;
use crate::views;
use crate::views::state::{OverviewMode, Tab, ViewState};
use anyhow::{Context, Result, bail};
use clap::Args;
use eframe::egui;
use headwise_engine::device::{DeviceChoice, create_device, shared_wgpu_setup};
use headwise_engine::edits::Edit;
use headwise_engine::pipeline::{self, Inputs, RunOptions, default_pack_tokens};
use headwise_engine::{LongInput, Model};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct EditBench {
    #[arg(long)]
    pub model: String,
    /// About this many tokens of prose (the first text that reaches it).
    #[arg(long, default_value_t = 128)]
    pub tokens: usize,
    /// The edits (repeatable), as `trace --edit`.
    #[arg(long = "edit", default_values_t = ["scale:*.*:0=0.1".to_string()])]
    pub edits: Vec<String>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The overview's canvas, in pixels (square).
    #[arg(long, default_value_t = 1200.0)]
    pub size: f32,
}

/// Edited runs redrawn, warm, timed: the medians of the run and of the whole, in seconds.
pub fn edit(args: EditBench) -> Result<()> {
    if args.tokens == 0 || args.runs == 0 {
        bail!("--tokens and --runs must be at least 1");
    }
    let edits = args
        .edits
        .iter()
        .map(|spec| {
            spec.parse::<Edit>()
                .map_err(|e| anyhow::anyhow!("--edit {spec}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    if model.takes_images() {
        bail!("--model {}: edits apply to text models", args.model);
    }
    let text = prose_of(&model, args.tokens)?;
    let options = RunOptions {
        long: LongInput::Reject,
        pack_tokens: default_pack_tokens(device.is_gpu),
        edits,
        ..Default::default()
    };
    let setup = shared_wgpu_setup().context("no wgpu adapter to draw with")?;
    let mut offscreen = Offscreen::new(setup.device, setup.queue, egui::Visuals::dark());
    let size = egui::vec2(args.size, args.size);
    let mut once = || -> Result<(f64, f64, usize)> {
        let start = Instant::now();
        let inputs = Inputs::Texts(vec![text.clone()]);
        let run = pipeline::run(&model, &args.model, &inputs, &options, &mut |_| true)?;
        let ran = start.elapsed().as_secs_f64();
        let tokens = run.session.meta.inputs[0].tokens.len();
        let doc = Arc::new(Document::new(run.session));
        let mut state = ViewState {
            tab: Tab::Overview,
            overview_mode: OverviewMode::Change,
            input: 1,
            ..Default::default()
        };
        views::render(&mut offscreen, &doc, &mut state, size, 1.0)?;
        Ok((ran, start.elapsed().as_secs_f64(), tokens))
    };
    let (_, _, tokens) = once()?;
    let (mut runs, mut wholes) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (ran, whole, _) = once()?;
        runs.push(ran);
        wholes.push(whole);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "edit",
            "model": args.model,
            "device": device.description,
            "tokens": tokens,
            "edits": args.edits,
            "runs": wholes.len(),
            "run_seconds": median(&mut runs),
            "edit_to_redrawn_seconds": median(&mut wholes),
        })
    );
    Ok(())
}

/// Prose of at least `tokens` tokens, whole words, the shortest such.
fn prose_of(model: &Model, tokens: usize) -> Result<String> {
    if tokens > model.config.max_positions {
        bail!(
            "--tokens {tokens} exceeds the model's {} positions",
            model.config.max_positions
        );
    }
    let tokenizer = model.tokenizer()?;
    let mut text = String::new();
    let mut words = TEXT.split_inclusive(' ').cycle();
    while tokenizer.encode(&text)?.ids.len() < tokens {
        text.push_str(words.next().unwrap_or(" "));
    }
    Ok(text)
}
