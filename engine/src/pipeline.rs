//! The run pipeline: a model and its inputs (texts or pictures) in, a session out, with progress
//! layer by layer and cancelling between layers. `headwise trace` and the window both run models
//! through it, so the same inputs give the same session wherever they are run.

use crate::edits::Edit;
use crate::error::EngineError;
use crate::imaging::load_image;
use crate::model::generation::Sampling;
use crate::model::gradients::TargetChoice;
use crate::model::{LongInput, Model, PassProgress, PixelInput, TokenInput};
use crate::session::Session;
use crate::trace::{AttentionCapture, Trace};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a run takes: texts for a text model, pictures for an image model.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Texts(Vec<String>),
    Images(Vec<PathBuf>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Images(i) => i.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a run treats its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// What to do with a text longer than the model's positions.
    pub long: LongInput,
    /// Text inputs are packed into passes of up to this many tokens (see
    /// [`Model::forward_many`]); 1 runs one pass per input.
    pub pack_tokens: usize,
    /// Hand back each input's trace (device tensors) with the session, for drawing attention
    /// where it was computed; otherwise each is dropped once the session holds its host copy.
    pub keep_traces: bool,
    /// Whether text inputs' attention is materialised or kept as q, k and lse only.
    pub capture: AttentionCapture,
    /// Edits: each text input is run as it is and again with these edits, the edited run
    /// stored after it with `base` pointing back (DESIGN.md, "Edits and runs").
    pub edits: Vec<Edit>,
    /// Continue each text by up to this many tokens first (decoders; DESIGN.md `generated`):
    /// fewer where the model ends the text or reaches its last position.
    pub generate: Option<Generation>,
    /// Differentiate this target for every input (base and edited runs alike) and store the
    /// gradients (DESIGN.md, "Gradients").
    pub gradients: Option<TargetChoice>,
}

/// What `--generate N [--temperature T --seed S]` asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generation {
    pub new_tokens: usize,
    pub sampling: Sampling,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            long: LongInput::Reject,
            pack_tokens: 1,
            keep_traces: false,
            capture: AttentionCapture::default(),
            edits: Vec::new(),
            generate: None,
            gradients: None,
        }
    }
}

/// One pass per input on the CPU, where a pass costs about the same per token at any length;
/// packed passes on a GPU, where many short passes leave it idle.
pub fn default_pack_tokens(is_gpu: bool) -> usize {
    if is_gpu { 1024 } else { 1 }
}

/// One input the run has finished, as progress reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub index: usize,
    pub total: usize,
    pub tokens: usize,
    /// Pictures: [width, height] as the model saw it (resized, cropped).
    pub picture: Option<[usize; 2]>,
}

/// How a run goes, as its progress callback hears it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunProgress {
    /// Input `index` (of `total`) is being continued: `done` of up to `of` new tokens.
    Generating {
        index: usize,
        total: usize,
        done: usize,
        of: usize,
    },
    /// A pass over inputs `inputs` (of `total`) is about to compute layer `layer` of
    /// `layers`; `edited` when it is the edited run of input `inputs.start`.
    Layer {
        inputs: Range<usize>,
        total: usize,
        layer: usize,
        layers: usize,
        edited: bool,
    },
    /// An input is finished.
    Finished(Finished),
}

impl RunProgress {
    /// How far the run's current stage is, 0..=1: the inputs done (a pass's layers counted
    /// as the share of its inputs they stand for), or the tokens generated.
    pub fn fraction(&self) -> f32 {
        match self {
            RunProgress::Generating { done, of, .. } => *done as f32 / (*of).max(1) as f32,
            RunProgress::Layer {
                inputs,
                total,
                layer,
                layers,
                ..
            } => {
                let within = *layer as f32 / (*layers).max(1) as f32;
                (inputs.start as f32 + within * inputs.len() as f32) / (*total).max(1) as f32
            }
            RunProgress::Finished(f) => (f.index + 1) as f32 / f.total.max(1) as f32,
        }
    }
}

impl std::fmt::Display for RunProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let of_inputs =
            |f: &mut std::fmt::Formatter<'_>, inputs: &Range<usize>, total: usize| match (
                total,
                inputs.len(),
            ) {
                (1, _) => Ok(()),
                (_, 1) => write!(f, ", input {} of {total}", inputs.start + 1),
                _ => write!(f, ", inputs {}-{} of {total}", inputs.start + 1, inputs.end),
            };
        match self {
            RunProgress::Generating {
                index,
                total,
                done,
                of,
            } => {
                write!(f, "continuing the text: token {done} of {of}")?;
                of_inputs(f, &(*index..index + 1), *total)
            }
            RunProgress::Layer {
                inputs,
                total,
                layer,
                layers,
                edited,
            } => {
                let run = if *edited { "edited run, " } else { "" };
                write!(f, "{run}layer {} of {layers}", layer + 1)?;
                of_inputs(f, inputs, *total)
            }
            RunProgress::Finished(done) => write!(f, "input {} of {}", done.index + 1, done.total),
        }
    }
}

/// What a run made.
pub struct Run {
    pub session: Session,
    /// One per input when [`RunOptions::keep_traces`] asked for them, else empty.
    pub traces: Vec<Trace>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("nothing to run: no inputs")]
    NoInputs,
    #[error("{path}: {source}")]
    Picture {
        path: PathBuf,
        #[source]
        source: EngineError,
    },
    #[error("cancelled after {done} of {total} inputs")]
    Cancelled { done: usize, total: usize },
    #[error(
        "this run would need about {:.1} GiB of memory and the machine has {:.1} GiB free: \
         run fewer or shorter inputs{}",
        gib(*needed),
        gib(*available),
        if *materialised { ", or keep attention as q, k and lse (--attention auto or none)" } else { "" }
    )]
    OutOfMemory {
        needed: u64,
        available: u64,
        /// Whether materialised attention is part of what is needed.
        materialised: bool,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// About how much memory a text run holds at its peak, beyond the loaded model: every layer's
/// q, k and lse of every input twice (on the compute device as the passes leave them, and in
/// the session), materialised attention twice where it is kept, and the working set of the
/// longest pass (hidden states, the feed-forward's activations, an attention tile).
pub fn text_run_bytes(model: &Model, lengths: &[usize], options: &RunOptions) -> u64 {
    let c = &model.config;
    let (layers, heads, kv, d) = (
        c.layers as u64,
        c.heads as u64,
        c.kv_heads as u64,
        c.head_dim as u64,
    );
    let kept: u64 = lengths
        .iter()
        .map(|&t| {
            let t = t as u64;
            let qk_lse = layers
                .saturating_mul((heads + kv).saturating_mul(d).saturating_add(heads))
                .saturating_mul(t);
            let attention = if options.capture.keeps(c.layers, c.heads, t as usize) {
                crate::trace::attention_bytes(c.layers, c.heads, t as usize) / 4
            } else {
                0
            };
            qk_lse.saturating_add(attention).saturating_mul(4 * 2)
        })
        .fold(0u64, u64::saturating_add);
    let longest = lengths.iter().copied().max().unwrap_or(0) as u64;
    let working = longest
        .saturating_mul(
            (c.hidden as u64)
                .saturating_mul(8)
                .saturating_add(c.intermediate as u64 * 3),
        )
        .saturating_mul(4)
        .saturating_add(2 * crate::model::layers::ATTENTION_TILE_BYTES as u64);
    kept.saturating_add(working)
}

/// The memory the system says is available for a new allocation (Linux: `MemAvailable`);
/// None where it does not say.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses a run that would not fit `available` bytes, before it starts.
fn check_memory(
    needed: u64,
    available: u64,
    options: &RunOptions,
    model: &Model,
    lengths: &[usize],
) -> Result<(), RunError> {
    if needed <= available {
        return Ok(());
    }
    let c = &model.config;
    Err(RunError::OutOfMemory {
        needed,
        available,
        materialised: lengths
            .iter()
            .any(|&t| options.capture.keeps(c.layers, c.heads, t)),
    })
}

/// The inputs of a text file: one per line, surrounding white space trimmed, empty lines
/// skipped, at most `limit`.
pub fn text_lines(content: &str, limit: usize) -> Vec<String> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(limit)
        .map(str::to_string)
        .collect()
}

/// The pictures in a folder (PNG, JPEG, WebP), sorted by name.
pub fn images_in(folder: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| EngineError::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_picture(p))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(EngineError::BadImage {
            path: folder.to_path_buf(),
            reason: "no PNG, JPEG or WebP images".into(),
        });
    }
    Ok(found)
}

/// Whether a file's name says it is a picture a model can take.
pub fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg", "webp"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Runs `model` (named `source` in the session) on every input. `progress` hears of each layer
/// a pass enters, each token generated and each input as it finishes, in order; returning false
/// stops the run there with [`RunError::Cancelled`].
pub fn run(
    model: &Model,
    source: &str,
    inputs: &Inputs,
    options: &RunOptions,
    progress: &mut dyn FnMut(&RunProgress) -> bool,
) -> Result<Run, RunError> {
    if inputs.is_empty() {
        return Err(RunError::NoInputs);
    }
    if let (Some(edit), Inputs::Images(_)) = (options.edits.first(), inputs) {
        return Err(EngineError::BadEdit {
            edit: edit.to_string(),
            reason: "edits apply to text inputs only".into(),
        }
        .into());
    }
    match inputs {
        Inputs::Texts(texts) => run_texts(model, source, texts, options, progress),
        Inputs::Images(paths) => run_images(model, source, paths, options, progress),
    }
}

/// Up to this many text inputs, a run keeps each one's whole next-token distribution.
pub const WHOLE_DISTRIBUTIONS_UP_TO: usize = 8;

fn run_texts(
    model: &Model,
    source: &str,
    texts: &[String],
    options: &RunOptions,
    progress: &mut dyn FnMut(&RunProgress) -> bool,
) -> Result<Run, RunError> {
    let total = texts.len();
    let mut encoded = model.encode_all(texts, options.long)?;
    let mut texts = texts.to_vec();
    let mut generated_counts = vec![None; total];
    if let Some(generation) = options.generate {
        let tokenizer = model.tokenizer()?;
        let stop = AtomicBool::new(false);
        for (i, e) in encoded.iter_mut().enumerate() {
            // Up to N: a prompt near the model's last position is continued as far as it goes.
            let room = model.config.max_positions.saturating_sub(e.ids.len());
            let new_tokens = generation.new_tokens.min(room);
            if new_tokens == 0 && model.is_decoder() {
                generated_counts[i] = Some(0);
                continue;
            }
            let mut heard = |done| {
                let going = progress(&RunProgress::Generating {
                    index: i,
                    total,
                    done,
                    of: new_tokens,
                });
                if !going {
                    stop.store(true, Ordering::Relaxed);
                }
            };
            let new = model
                .generate(&e.ids, new_tokens, generation.sampling, &stop, &mut heard)
                .map_err(|e| cancelled_at(e, 0, total))?;
            texts[i].push_str(&tokenizer.decode(&new));
            e.tokens.extend(new.iter().map(|&id| tokenizer.display(id)));
            e.type_ids.extend(std::iter::repeat_n(0, new.len()));
            e.ids.extend(&new);
            generated_counts[i] = Some(new.len());
        }
    }
    let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
    if let Some(available) = available_memory() {
        check_memory(
            text_run_bytes(model, &lengths, options),
            available,
            options,
            model,
            &lengths,
        )?;
    }
    let token_inputs: Vec<TokenInput> = encoded.iter().map(TokenInput::from).collect();
    let mut reported = 0;
    let layers = model.config.layers;
    let traces = model.forward_many_watched(
        &token_inputs,
        options.pack_tokens,
        options.capture,
        &mut |pass| match pass {
            PassProgress::Layer { inputs, layer } => progress(&RunProgress::Layer {
                inputs,
                total,
                layer,
                layers,
                edited: false,
            }),
            PassProgress::Done(done) => {
                let mut go_on = true;
                for (index, input) in encoded.iter().enumerate().take(done).skip(reported) {
                    go_on &= progress(&RunProgress::Finished(Finished {
                        index,
                        total,
                        tokens: input.ids.len(),
                        picture: None,
                    }));
                }
                reported = done;
                go_on
            }
        },
    )?;
    if traces.len() < total {
        return Err(RunError::Cancelled {
            done: traces.len(),
            total,
        });
    }
    let mut session = Session::new(model, source);
    for (index, (((text, encoded), trace), generated)) in texts
        .iter()
        .zip(&encoded)
        .zip(&traces)
        .zip(generated_counts)
        .enumerate()
    {
        session.push_text(model, text, encoded, trace)?;
        session
            .meta
            .inputs
            .last_mut()
            .expect("just pushed")
            .generated = generated;
        if let Some(choice) = options.gradients {
            let (_, figures) = model.text_gradients(&TokenInput::from(encoded), &[], choice)?;
            session.set_gradients(session.meta.inputs.len() - 1, &figures);
        }
        // A few prompts (not a corpus) keep their whole next-token distribution, so that an
        // edited run or another model's run (`headwise compare`) can be compared with it.
        if (total <= WHOLE_DISTRIBUTIONS_UP_TO || !options.edits.is_empty())
            && let Some(probs) = &trace.next_token_probs
        {
            session.set_next_token_probs(session.meta.inputs.len() - 1, probs);
        }
        if !options.edits.is_empty() {
            let base = session.meta.inputs.len() - 1;
            let watch = std::cell::RefCell::new(&mut *progress);
            let edited = model
                .forward_edited_watched(
                    &TokenInput::from(encoded),
                    options.capture,
                    &options.edits,
                    &|layer| {
                        (watch.borrow_mut())(&RunProgress::Layer {
                            inputs: index..index + 1,
                            total,
                            layer,
                            layers,
                            edited: true,
                        })
                    },
                )
                .map_err(|e| cancelled_at(e, index, total))?;
            session.push_text(model, text, encoded, &edited)?;
            if let Some(probs) = &edited.next_token_probs {
                session.set_next_token_probs(base + 1, probs);
            }
            let info = session.meta.inputs.last_mut().expect("just pushed");
            info.edits = options.edits.iter().map(|e| e.to_string()).collect();
            info.base = Some(base);
            info.generated = generated;
            if let Some(choice) = options.gradients {
                let (_, figures) =
                    model.text_gradients(&TokenInput::from(encoded), &options.edits, choice)?;
                session.set_gradients(base + 1, &figures);
            }
        }
    }
    Ok(Run {
        session,
        traces: if options.keep_traces {
            traces
        } else {
            Vec::new()
        },
    })
}

/// A cancelled pass as the run's [`RunError::Cancelled`], `done` inputs finished before it;
/// any other error as it is.
fn cancelled_at(error: EngineError, done: usize, total: usize) -> RunError {
    match error {
        EngineError::Cancelled => RunError::Cancelled { done, total },
        other => other.into(),
    }
}

fn run_images(
    model: &Model,
    source: &str,
    paths: &[PathBuf],
    options: &RunOptions,
    progress: &mut dyn FnMut(&RunProgress) -> bool,
) -> Result<Run, RunError> {
    let total = paths.len();
    let mut session = Session::new(model, source);
    let mut traces = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let in_picture = |source| RunError::Picture {
            path: path.clone(),
            source,
        };
        let picture = load_image(path)?;
        let prepared = model.prepare_image(index, &picture).map_err(in_picture)?;
        let trace = model
            .forward_image(&PixelInput::from(&prepared))
            .map_err(in_picture)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        session.push_image(model, &name, &prepared, &trace)?;
        if let Some(choice) = options.gradients {
            let (_, figures) = model
                .image_gradients(&PixelInput::from(&prepared), choice)
                .map_err(in_picture)?;
            session.set_gradients(index, &figures);
        }
        if options.keep_traces {
            traces.push(trace);
        }
        let finished = Finished {
            index,
            total,
            tokens: session.meta.inputs[index].tokens.len(),
            picture: Some([prepared.view.width, prepared.view.height]),
        };
        if !progress(&RunProgress::Finished(finished)) && index + 1 < total {
            return Err(RunError::Cancelled {
                done: index + 1,
                total,
            });
        }
    }
    Ok(Run { session, traces })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_files_inputs_are_its_trimmed_non_empty_lines_up_to_the_limit() {
        assert_eq!(text_lines("a\n\n  \n b \t\r\nc\n", 10), ["a", "b", "c"]);
        assert_eq!(text_lines("a\nb\nc\n", 2), ["a", "b"]);
        assert!(text_lines("\n \n", 10).is_empty());
    }

    #[test]
    fn pictures_are_known_by_their_extension_in_any_case() {
        assert!(is_picture(Path::new("a/cat.PNG")));
        assert!(is_picture(Path::new("dog.jpeg")));
        assert!(!is_picture(Path::new("notes.txt")));
        assert!(!is_picture(Path::new("png")));
    }
}
