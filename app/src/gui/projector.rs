//! The thread that lays out query-key embeddings, so the window stays live while PCA runs over
//! every head and UMAP or t-SNE refine one. Results go straight into the document's projection
//! store; the views pick them up on the next frame.

use crate::document::Document;
use eframe::egui;
use headwise_engine::analysis::projection::joint::{HeadVectors, gather, joint_embedding, norms};
use headwise_engine::analysis::projection::{Method, Work, pca_heads_with_norms, project_head};
use headwise_engine::device::{DeviceChoice, create_device};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

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
    jobs: Sender<(u64, ProjectJob)>,
    busy: Arc<Mutex<Option<Busy>>>,
    cancel: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
    /// Jobs already asked for, so a view asking every frame sends each once.
    asked: Mutex<Vec<JobKey>>,
}

impl Projector {
    pub fn start(ctx: egui::Context, device: DeviceChoice) -> Self {
        let (jobs, rx) = channel::<(u64, ProjectJob)>();
        let busy = Arc::new(Mutex::new(None));
        let cancel = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let (b, c, e) = (busy.clone(), cancel.clone(), last_error.clone());
        std::thread::Builder::new()
            .name("headwise projector".into())
            .spawn(move || {
                let device = match create_device(device) {
                    Ok(d) => d.device,
                    Err(err) => {
                        *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
                        return;
                    }
                };
                while let Ok((_, job)) = rx.recv() {
                    c.store(false, Ordering::Relaxed);
                    let set = |message: String, fraction: f32| {
                        *b.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Busy { message, fraction });
                        ctx.request_repaint();
                    };
                    let result = run(job, &device, &set, &c);
                    *b.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if let Err(err) = result {
                        *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
                    }
                    ctx.request_repaint();
                }
            })
            .expect("spawning the projector thread");
        Self {
            jobs,
            busy,
            cancel,
            last_error,
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Sends a job unless the same one was already sent for this document.
    pub fn ask(&self, job: ProjectJob) {
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
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if asked.contains(&key) {
            return;
        }
        asked.push(key);
        let _ = self.jobs.send((key.0, job));
    }

    /// Forgets what was asked, so a cancelled or failed job can be asked again.
    pub fn forget(&self) {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn busy(&self) -> Option<Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.forget();
    }

    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Runs `work` on every head's vectors of one layer at a time, with progress, until cancelled.
fn each_layer(
    doc: &Document,
    what: &str,
    set: &(dyn Fn(String, f32) + Sync),
    cancel: &AtomicBool,
    mut work: impl FnMut(usize, &[HeadVectors]) -> headwise_engine::Result<()>,
) -> Result<(), String> {
    let m = &doc.session.meta.model;
    for layer in 0..m.layers {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        set(
            format!("{what}, layer {layer} of {}", m.layers),
            layer as f32 / m.layers as f32,
        );
        let heads: Vec<HeadVectors> = (0..m.heads)
            .map(|h| gather(&doc.session.layers, layer, h, m.heads, m.kv_heads))
            .collect();
        work(layer, &heads).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

fn run(
    job: ProjectJob,
    device: &headwise_engine::device::Device,
    set: &(dyn Fn(String, f32) + Sync),
    cancel: &AtomicBool,
) -> Result<(), String> {
    match job {
        ProjectJob::Pca { doc, dims } => each_layer(&doc, "PCA", set, cancel, |layer, heads| {
            let (layouts, norms) = pca_heads_with_norms(heads, dims, device)?;
            for (head, (layout, norms)) in layouts.into_iter().zip(norms).enumerate() {
                doc.projections
                    .insert(Method::Pca, layer, head, dims, layout, 0);
                doc.projections.set_norms(layer, head, norms);
            }
            Ok(())
        }),
        ProjectJob::Norms { doc } => each_layer(&doc, "norms", set, cancel, |layer, heads| {
            let norms = norms(joint_embedding(heads, device)?)?;
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
            let progress = |f: f32| set(label.clone(), f);
            set(label.clone(), 0.0);
            match project_head(
                &vectors,
                method,
                dims,
                seed,
                device,
                &Work::new(&progress, Some(cancel)),
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
