//! The thread that loads models and runs them, so the window never waits on the engine. The UI
//! sends jobs and reads reports each frame; a burst of edits collapses into one run of the
//! newest text.

use crate::document::{DeviceAttention, device_attention};
use crate::model_source::resolve_model;
use eframe::egui;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::imaging::load_image;
use headwise_engine::session::Session;
use headwise_engine::{LongInput, Model, PixelInput, TokenInput};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

pub enum Job {
    Load {
        spec: String,
    },
    /// Texts for a text model, pictures for an image model.
    Run {
        id: u64,
        texts: Vec<String>,
        images: Vec<PathBuf>,
    },
    /// Many inputs at once for the query-key view, with progress; cancellable.
    Corpus {
        id: u64,
        texts: Vec<String>,
        images: Vec<PathBuf>,
    },
}

pub enum Report {
    Progress {
        message: String,
        fraction: Option<f32>,
    },
    Loaded {
        spec: String,
        summary: String,
        device: String,
        takes_images: bool,
    },
    LoadFailed {
        spec: String,
        error: String,
    },
    Ran {
        id: u64,
        session: Session,
        /// Where a GPU run left its attention, for the views to draw from (empty on the CPU).
        device_attention: DeviceAttention,
        took: Duration,
    },
    RunFailed {
        id: u64,
        error: String,
    },
}

pub struct Worker {
    jobs: Sender<Job>,
    reports: Receiver<Report>,
    cancel: Arc<AtomicBool>,
}

impl Worker {
    pub fn start(ctx: egui::Context, device: DeviceChoice) -> Self {
        let (jobs, job_rx) = channel();
        let (report_tx, reports) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        std::thread::Builder::new()
            .name("headwise engine".into())
            .spawn(move || work(job_rx, report_tx, ctx, device, &flag))
            .expect("spawning the engine thread");
        Self {
            jobs,
            reports,
            cancel,
        }
    }

    pub fn send(&self, job: Job) {
        if matches!(job, Job::Corpus { .. }) {
            self.cancel.store(false, Ordering::Relaxed);
        }
        let _ = self.jobs.send(job);
    }

    /// Stops a corpus run between two inputs; the document on screen stays.
    pub fn cancel_corpus(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn reports(&self) -> impl Iterator<Item = Report> + '_ {
        self.reports.try_iter()
    }
}

struct Loaded {
    spec: String,
    model: Model,
    /// Corpus runs pack inputs into passes of this many tokens (see `trace --pack-tokens`).
    pack_tokens: usize,
}

fn work(
    jobs: Receiver<Job>,
    reports: Sender<Report>,
    ctx: egui::Context,
    choice: DeviceChoice,
    cancel: &AtomicBool,
) {
    let report = |r: Report| {
        let _ = reports.send(r);
        ctx.request_repaint();
    };
    let mut loaded: Option<Loaded> = None;
    while let Ok(first) = jobs.recv() {
        // Only the newest load and the newest run after it matter.
        let mut pending = vec![first];
        pending.extend(jobs.try_iter());
        let last_load = pending.iter().rposition(|j| matches!(j, Job::Load { .. }));
        let last_run = pending
            .iter()
            .rposition(|j| matches!(j, Job::Run { .. } | Job::Corpus { .. }));
        let mut todo = Vec::new();
        if let Some(i) = last_load {
            todo.push(i);
        }
        if let Some(i) = last_run.filter(|&r| last_load.is_none_or(|l| r > l)) {
            todo.push(i);
        }
        let mut pending: Vec<Option<Job>> = pending.into_iter().map(Some).collect();
        for i in todo {
            match pending[i].take() {
                Some(Job::Load { spec }) => {
                    loaded = None;
                    match load(&spec, choice, &report) {
                        Ok((model, device, is_gpu)) => {
                            let c = &model.config;
                            report(Report::Loaded {
                                spec: spec.clone(),
                                summary: format!(
                                    "{}: {} layers x {} heads ({} kv), d = {}",
                                    c.model_type, c.layers, c.heads, c.kv_heads, c.head_dim
                                ),
                                device,
                                takes_images: model.takes_images(),
                            });
                            loaded = Some(Loaded {
                                spec,
                                model,
                                pack_tokens: crate::cli::trace::default_pack_tokens(is_gpu),
                            });
                        }
                        Err(e) => report(Report::LoadFailed {
                            spec,
                            error: format!("{e:#}"),
                        }),
                    }
                }
                Some(job @ (Job::Run { .. } | Job::Corpus { .. })) => {
                    // A corpus keeps the first tokens of an overlong line; a prompt says it is
                    // too long.
                    let (id, texts, images, long) = match job {
                        Job::Run { id, texts, images } => (id, texts, images, LongInput::Reject),
                        Job::Corpus { id, texts, images } => {
                            (id, texts, images, LongInput::Truncate)
                        }
                        Job::Load { .. } => unreachable!("matched above"),
                    };
                    match &loaded {
                        None => report(Report::RunFailed {
                            id,
                            error: "no model is loaded".into(),
                        }),
                        Some(l) => {
                            let start = Instant::now();
                            let count = if l.model.takes_images() {
                                images.len()
                            } else {
                                texts.len()
                            };
                            // A single prompt needs no progress; a corpus reports every input.
                            let progress = |done: usize| -> bool {
                                if count > 1 {
                                    report(Report::Progress {
                                        message: format!("input {done} of {count}"),
                                        fraction: Some(done as f32 / count as f32),
                                    });
                                }
                                !cancel.load(Ordering::Relaxed)
                            };
                            let ran = if l.model.takes_images() {
                                run_images(&l.model, &l.spec, &images, &progress)
                            } else {
                                run(&l.model, &l.spec, &texts, long, l.pack_tokens, &progress)
                            };
                            match ran {
                                Ok((session, device_attention)) => report(Report::Ran {
                                    id,
                                    session,
                                    device_attention,
                                    took: start.elapsed(),
                                }),
                                Err(e) => report(Report::RunFailed {
                                    id,
                                    error: format!("{e:#}"),
                                }),
                            }
                        }
                    }
                }
                None => {}
            }
        }
    }
}

fn load(
    spec: &str,
    choice: DeviceChoice,
    report: &dyn Fn(Report),
) -> anyhow::Result<(Model, String, bool)> {
    let progress = |message: &str, fraction: Option<f32>| {
        report(Report::Progress {
            message: message.to_string(),
            fraction,
        })
    };
    let path = resolve_model(spec, &progress)?;
    let device = create_device(choice)?;
    progress(&format!("loading {spec}"), Some(0.0));
    let model = Model::load(&path, &device.device, &|f| {
        progress(&format!("loading {spec}"), Some(f))
    })
    .map_err(|e| anyhow::anyhow!("loading model {spec}: {e}"))?;
    Ok((model, device.description, device.is_gpu))
}

/// Called before each input with the count done; false stops the run.
type Progress<'a> = dyn Fn(usize) -> bool + 'a;

fn run(
    model: &Model,
    spec: &str,
    texts: &[String],
    long: LongInput,
    pack_tokens: usize,
    progress: &Progress,
) -> anyhow::Result<(Session, DeviceAttention)> {
    let mut session = Session::new(model, spec);
    let encoded = model.encode_all(texts, long)?;
    let inputs: Vec<TokenInput> = encoded.iter().map(TokenInput::from).collect();
    if !progress(0) {
        anyhow::bail!("cancelled before the first of {} inputs", texts.len());
    }
    let traces = model.forward_many(&inputs, pack_tokens, &mut |done| progress(done))?;
    if traces.len() < texts.len() {
        anyhow::bail!("cancelled after {} of {} inputs", traces.len(), texts.len());
    }
    for ((text, encoded), trace) in texts.iter().zip(&encoded).zip(&traces) {
        session.push_text(model, text, encoded, trace)?;
    }
    Ok((session, device_attention(&traces)))
}

fn run_images(
    model: &Model,
    spec: &str,
    images: &[PathBuf],
    progress: &Progress,
) -> anyhow::Result<(Session, DeviceAttention)> {
    if images.is_empty() {
        anyhow::bail!("{spec} is an image model: open a picture or drop one on the window");
    }
    let mut session = Session::new(model, spec);
    let mut traces = Vec::with_capacity(images.len());
    for (index, path) in images.iter().enumerate() {
        if !progress(index) {
            anyhow::bail!("cancelled after {index} of {} pictures", images.len());
        }
        let picture = load_image(path)?;
        let prepared = model.prepare_image(index, &picture)?;
        let trace = model.forward_image(&PixelInput::from(&prepared))?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        session.push_image(model, &name, &prepared, &trace)?;
        traces.push(trace);
    }
    Ok((session, device_attention(&traces)))
}
