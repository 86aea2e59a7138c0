//! Laying out query-key embeddings in jobs, so the window stays live while PCA runs over every
//! head and UMAP or t-SNE refine one. The query-key view asks for what it lacks; each job is
//! asked once per document, runs after those asked before it, and puts its result straight
//! into the document's projection store, where the views pick it up on the next frame.

use super::app::HeadwiseApp;
use crate::document::Document;
use crate::jobs::{JobContext, JobSlot, Repaint};
use crate::views::qk::QkAction;
use headwise_engine::analysis::projection::joint::{HeadVectors, gather, joint_embedding, norms};
use headwise_engine::analysis::projection::{Method, Work, pca_heads_with_norms, project_head};
use headwise_engine::device::{DeviceChoice, create_device};
use std::collections::VecDeque;
use std::sync::Arc;

pub enum ProjectJob {
    /// PCA of every head, a layer at a time.
    Pca { doc: Arc<Document>, dims: usize },
    /// Every head's joint-vector norms (a session opened with its layouts has none).
    Norms { doc: Arc<Document> },
    /// UMAP or t-SNE of one head.
    Refine {
        doc: Arc<Document>,
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
        seed: u64,
    },
}

/// A job's identity: document generation, method, layer, head, dims (PCA of every head has
/// layer usize::MAX).
type JobKey = (u64, Method, usize, usize, usize);

/// What the projector is doing, for the progress bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Busy {
    pub message: String,
    pub fraction: f32,
}

pub struct Projector {
    device: DeviceChoice,
    slot: JobSlot<JobKey, Result<(), String>>,
    queue: VecDeque<(JobKey, ProjectJob)>,
    /// Jobs already asked for, so a view asking every frame sends each once.
    asked: Vec<JobKey>,
    last_error: Option<String>,
}

impl Projector {
    pub fn new(device: DeviceChoice) -> Self {
        Self {
            device,
            slot: JobSlot::new("projector"),
            queue: VecDeque::new(),
            asked: Vec::new(),
            last_error: None,
        }
    }

    /// Queues a job unless the same one was already asked for this document.
    pub fn ask(&mut self, job: ProjectJob) {
        let key = match &job {
            ProjectJob::Pca { doc, dims } => (doc.generation, Method::Pca, usize::MAX, 0, *dims),
            ProjectJob::Norms { doc } => (doc.generation, Method::Pca, usize::MAX, 1, 0),
            ProjectJob::Refine {
                doc,
                method,
                layer,
                head,
                dims,
                ..
            } => (doc.generation, *method, *layer, *head, *dims),
        };
        if self.asked.contains(&key) {
            return;
        }
        self.asked.push(key);
        self.queue.push_back((key, job));
    }

    /// Collects the finished job's outcome and starts the next one asked for.
    pub fn poll(&mut self, repaint: &Repaint) {
        if let Some((_, Err(error))) = self.slot.poll() {
            self.last_error = Some(error);
        }
        if !self.slot.busy()
            && let Some((key, job)) = self.queue.pop_front()
        {
            let device = self.device;
            self.slot
                .start(key, repaint, move |cx| run(job, device, cx));
        }
    }

    pub fn busy(&self) -> Option<Busy> {
        self.slot.progress().map(|p| Busy {
            message: p.message,
            fraction: p.fraction.unwrap_or(0.0),
        })
    }

    /// Stops the job under way and forgets the rest, so they can be asked for again.
    pub fn cancel(&mut self) {
        self.slot.cancel();
        self.queue.clear();
        self.asked.clear();
    }

    /// The document changed: nothing asked for the old one is wanted.
    pub fn clear(&mut self) {
        self.cancel();
    }

    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }
}

impl HeadwiseApp {
    /// Sends the projector what a query-key view asked for.
    pub(super) fn project(&mut self, doc: &Arc<Document>, action: QkAction) {
        match action {
            QkAction::NeedPca { dims } => self.projector.ask(ProjectJob::Pca {
                doc: doc.clone(),
                dims,
            }),
            QkAction::NeedNorms => self.projector.ask(ProjectJob::Norms { doc: doc.clone() }),
            QkAction::NeedRefine {
                method,
                layer,
                head,
                dims,
                seed,
            } => self.projector.ask(ProjectJob::Refine {
                doc: doc.clone(),
                method,
                layer,
                head,
                dims,
                seed,
            }),
            QkAction::RefineAll { method, dims, seed } => {
                for layer in 0..doc.layers() {
                    for head in 0..doc.heads() {
                        if doc.projections.get(method, layer, head, dims).is_none() {
                            self.projector.ask(ProjectJob::Refine {
                                doc: doc.clone(),
                                method,
                                layer,
                                head,
                                dims,
                                seed,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Each frame: the projector's jobs, and layouts computed since the last save count as
    /// unsaved work.
    pub(super) fn poll_projections(&mut self) {
        self.projector.poll(&self.repaint);
        if let Some(error) = self.projector.take_error() {
            self.messages.error = Some(error);
        }
        if let Some(doc) = &self.doc {
            let changes = doc.projections.changes();
            if changes != self.files.projections_seen {
                self.files.projections_seen = changes;
                self.files.layouts_unsaved = true;
            }
        }
    }

    /// Whether the query-key view, if it is showing, has every head's layout to draw.
    pub(super) fn layouts_ready(&self) -> bool {
        let Some(doc) = &self.doc else { return true };
        if !crate::views::view(self.view.tab).over_corpus() || !crate::views::qk::available(doc) {
            return true;
        }
        let dims = self.view.qk.dims();
        let all = doc.layers() * doc.heads();
        doc.projections.count(Method::Pca, dims) == all
            && (!self.view.qk.single
                || doc
                    .projections
                    .get(self.view.qk.method, self.view.layer, self.view.head, dims)
                    .is_some())
    }
}

/// Runs `work` on every head's vectors of one layer at a time, with progress, until cancelled.
fn each_layer(
    doc: &Document,
    what: &str,
    cx: &JobContext,
    mut work: impl FnMut(usize, &[HeadVectors]) -> headwise_engine::Result<()>,
) -> Result<(), String> {
    let m = &doc.session.meta.model;
    for layer in 0..m.layers {
        if cx.cancelled() {
            return Ok(());
        }
        cx.progress(
            format!("{what}, layer {layer} of {}", m.layers),
            Some(layer as f32 / m.layers as f32),
        );
        let heads: Vec<HeadVectors> = (0..m.heads)
            .map(|h| gather(&doc.session.layers, layer, h, m.heads, m.kv_heads))
            .collect();
        work(layer, &heads).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

fn run(job: ProjectJob, device: DeviceChoice, cx: &JobContext) -> Result<(), String> {
    let device = create_device(device).map_err(|e| e.to_string())?.device;
    match job {
        ProjectJob::Pca { doc, dims } => each_layer(&doc, "PCA", cx, |layer, heads| {
            let (layouts, norms) = pca_heads_with_norms(heads, dims, &device)?;
            for (head, (layout, norms)) in layouts.into_iter().zip(norms).enumerate() {
                doc.projections
                    .insert(Method::Pca, layer, head, dims, layout, 0);
                doc.projections.set_norms(layer, head, norms);
            }
            Ok(())
        }),
        ProjectJob::Norms { doc } => each_layer(&doc, "norms", cx, |layer, heads| {
            let norms = norms(joint_embedding(heads, &device)?)?;
            for (head, norms) in norms.into_iter().enumerate() {
                doc.projections.set_norms(layer, head, norms);
            }
            Ok(())
        }),
        ProjectJob::Refine {
            doc,
            method,
            layer,
            head,
            dims,
            seed,
        } => {
            let m = &doc.session.meta.model;
            let vectors = gather(&doc.session.layers, layer, head, m.heads, m.kv_heads);
            let label = format!(
                "{} of head {layer}.{head}, {} points",
                method.label(),
                2 * vectors.n
            );
            let progress = |f: f32| cx.progress(label.clone(), Some(f));
            cx.progress(label.clone(), Some(0.0));
            match project_head(
                &vectors,
                method,
                dims,
                seed,
                &device,
                &Work::new(&progress, Some(cx.cancel_flag())),
            ) {
                Ok(points) => {
                    doc.projections
                        .insert(method, layer, head, dims, points, seed);
                    Ok(())
                }
                Err(headwise_engine::EngineError::Cancelled) => Ok(()),
                Err(e) => Err(format!("{} of head {layer}.{head}: {e}", method.label())),
            }
        }
    }
}
