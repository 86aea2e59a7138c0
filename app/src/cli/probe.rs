//! `headwise probe retrieval`: the needle-in-a-haystack probe that finds retrieval heads (Wu et
//! al.). A haystack from the default corpus with a needle sentence at a chosen depth, then a
//! question and the needle's answer, teacher-forced; every head is scored by the share of
//! answer tokens whose strongest attention lands on the same token inside the needle. The
//! session it writes holds the probe's layout, so the window's overview colours and sorts by the
//! scores (metric "retrieval"), and `retrieval/0` [layers, heads] for other readers.

use super::progress::{load_model, report_written};
use crate::corpus::DEFAULT_CORPUS;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use headwise_engine::analysis::retrieval::{ProbeLayout, retrieval_scores};
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::model::config::Architecture;
use headwise_engine::pipeline::{self, Inputs, RunOptions};
use headwise_engine::session::StoreDtype;
use headwise_engine::{AttentionCapture, LongInput, Model};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ProbeCommand {
    /// Score every head as a retrieval head on a needle-in-a-haystack input.
    Retrieval(RetrievalArgs),
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// A decoder: folder, .gguf file, fetched model's name or repo id.
    #[arg(long)]
    pub model: String,
    /// About how many tokens the input has (haystack, needle, question and answer).
    #[arg(long, default_value_t = 2048)]
    pub tokens: usize,
    /// Where the needle goes in the haystack, 0 (start) to 1 (end).
    #[arg(long, default_value_t = 0.5)]
    pub depth: f32,
    #[arg(long, default_value = "retrieval-probe.safetensors")]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// How many of the best heads to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// The needle, and the question whose answer copies the needle's second half.
pub const NEEDLE: &str = "The best thing to do in Lisbon is to eat a custard tart and watch the trams on a sunny afternoon.";
pub const QUESTION: &str = "\n\nQuestion: What is the best thing to do in Lisbon?\nAnswer: The best thing to do in Lisbon is";
pub const ANSWER: &str = " to eat a custard tart and watch the trams on a sunny afternoon.";

pub fn run(command: ProbeCommand) -> Result<()> {
    match command {
        ProbeCommand::Retrieval(args) => retrieval(args),
    }
}

fn retrieval(args: RetrievalArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.depth) {
        bail!("--depth {}: between 0 and 1", args.depth);
    }
    let device = create_device(args.device)?;
    let model = load_model(&args.model, &device)?;
    if !matches!(
        model.config.architecture,
        Architecture::Llama | Architecture::Gpt2 | Architecture::Gemma
    ) {
        bail!(
            "{}: the retrieval probe needs a decoder (a model that predicts the next token)",
            args.model
        );
    }
    let text = probe_text(&model, args.tokens, args.depth)?;
    let encoded = model.encode(0, &text, LongInput::Reject)?;
    let without_answer = model.encode(0, &text[..text.len() - ANSWER.len()], LongInput::Reject)?;
    let answer_len = encoded.ids.len().saturating_sub(without_answer.ids.len());
    let layout = ProbeLayout::find(&encoded.ids, answer_len).with_context(|| {
        format!(
            "{}: the answer's tokens do not appear in the needle as this tokenizer splits them",
            args.model
        )
    })?;
    eprintln!(
        "probe: {} tokens, needle's answer at tokens {}..{}, answer at {}..{}",
        encoded.ids.len(),
        layout.needle[0],
        layout.needle[1],
        layout.answer[0],
        layout.answer[1]
    );
    let options = RunOptions {
        capture: AttentionCapture::default(),
        ..RunOptions::default()
    };
    let mut run = pipeline::run(
        &model,
        &args.model,
        &Inputs::Texts(vec![text]),
        &options,
        &mut |_| true,
    )?;
    run.session.meta.inputs[0].probe = Some(layout);
    let scores = retrieval_scores(&run.session, 0).context("scoring the heads")?;
    run.session.set_retrieval_scores(0, &scores);
    run.session.save(&args.out, StoreDtype::F32)?;
    let mut ranked: Vec<(usize, usize, f32)> = scores
        .iter()
        .enumerate()
        .flat_map(|(l, heads)| heads.iter().enumerate().map(move |(h, &s)| (l, h, s)))
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("retrieval score (share of answer tokens copied from the needle), highest first:");
    for (l, h, s) in ranked.iter().take(args.top) {
        println!("  L{l}.H{h}  {s:.2}");
    }
    report_written(&args.out, &device);
    Ok(())
}

/// The probe's text: about `tokens` tokens of the default corpus with the needle at `depth`,
/// then the question and the answer.
pub fn probe_text(model: &Model, tokens: usize, depth: f32) -> Result<String> {
    let count =
        |text: &str| -> Result<usize> { Ok(model.encode(0, text, LongInput::Truncate)?.ids.len()) };
    let fixed = count(&format!("{NEEDLE} {QUESTION}{ANSWER}"))?;
    let words: Vec<&str> = DEFAULT_CORPUS.split_whitespace().collect();
    let target = tokens.saturating_sub(fixed).max(1);
    // Words per token on a sample, then adjust until the haystack is within 2% of the target.
    let sample = words[..words.len().min(2000)].join(" ");
    let mut n =
        ((target as f64) * words.len().min(2000) as f64 / count(&sample)?.max(1) as f64) as usize;
    let mut haystack = String::new();
    for _ in 0..6 {
        n = n.clamp(1, words.len());
        haystack = words[..n].join(" ");
        let got = count(&haystack)?;
        if got.abs_diff(target) * 50 <= target || n == words.len() {
            break;
        }
        n = (n as f64 * target as f64 / got.max(1) as f64) as usize;
    }
    // Within 2% may be over: trim to the model's positions (and the tokens asked for).
    let limit = tokens.min(model.config.max_positions);
    for _ in 0..8 {
        let total = count(&haystack)? + fixed;
        if total <= limit {
            break;
        }
        n = n.saturating_sub((total - limit) * n / total.max(1) + 1);
        haystack = words[..n.max(1)].join(" ");
    }
    if count(&haystack)? + fixed > limit {
        bail!(
            "--tokens {tokens}: the probe does not fit the model's {} positions",
            model.config.max_positions
        );
    }
    // The needle goes at the sentence end nearest the depth.
    let at = (haystack.len() as f32 * depth) as usize;
    let cut = haystack[at.min(haystack.len())..]
        .find(". ")
        .map_or(haystack.len(), |i| at + i + 1);
    let (before, after) = haystack.split_at(cut);
    Ok(format!(
        "{} {NEEDLE}{}{QUESTION}{ANSWER}",
        before.trim_end(),
        after.trim_end()
    ))
}
