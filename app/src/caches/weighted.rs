//! The document's value-weighted twin: the same session with every head's attention weighted by
//! the norm of what it moves, ‖α_ij v_j‖, renormalised per row (engine
//! `analysis::value_weighting`). It is a document of its own, with its own caches, so every view,
//! metric, thumbnail and rollout shows value-weighted attention without knowing it. Small
//! sessions get it at once; long ones in a job (a pass over every head's rows).

use super::lock;
use crate::document::Document;
use crate::jobs::{Job, Progress, Repaint};
use headwise_engine::analysis::value_weighting::value_weighted;
use headwise_engine::session::Session;
use headwise_engine::trace::attention_bytes;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Sessions with more attention than this are weighted in a job.
const IN_BACKGROUND_ABOVE_BYTES: u64 = 64 << 20;

/// Where the value-weighted document stands.
#[derive(Clone)]
pub enum Weighted {
    Ready(Arc<Document>),
    Pending(Progress),
    /// Why there is none (a session made before value norms were captured).
    Failed(String),
}

#[derive(Default)]
pub struct WeightedCache {
    state: Mutex<State>,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Running(Job<Result<Session, String>>),
    Done(Result<Arc<Document>, String>),
}

impl WeightedCache {
    /// The value-weighted document of `doc`, starting its job (or working it out at once for a
    /// small session) the first time.
    pub fn get(&self, doc: &Document, repaint: &Repaint) -> Weighted {
        let mut state = lock(&self.state);
        if let State::Idle = *state {
            if session_bytes(&doc.session) <= IN_BACKGROUND_ABOVE_BYTES {
                *state = State::Done(weigh(doc, &doc.session, &AtomicBool::new(false), |_| {}));
            } else {
                let session = doc.session.clone();
                *state =
                    State::Running(Job::spawn("value weighting", repaint.clone(), move |cx| {
                        value_weighted(&session, cx.cancel_flag(), |f| {
                            cx.progress("value-weighting the attention", Some(f))
                        })
                        .map_err(|e| e.to_string())
                    }));
            }
        }
        if let State::Running(job) = &*state {
            match job.poll() {
                Some(result) => {
                    *state = State::Done(result.map(|s| document_like(doc, s)));
                }
                None => return Weighted::Pending(job.progress()),
            }
        }
        match &*state {
            State::Done(Ok(weighted)) => Weighted::Ready(weighted.clone()),
            State::Done(Err(e)) => Weighted::Failed(e.clone()),
            _ => Weighted::Pending(Progress::default()),
        }
    }

    /// The value-weighted document, working it out here if need be (pictures drawn once).
    pub fn wait(&self, doc: &Document) -> Result<Arc<Document>, String> {
        let mut state = lock(&self.state);
        if let State::Running(job) = &*state {
            job.cancel();
            *state = State::Idle;
        }
        if let State::Idle = *state {
            *state = State::Done(weigh(doc, &doc.session, &AtomicBool::new(false), |_| {}));
        }
        match &*state {
            State::Done(done) => done.clone(),
            _ => Err("value weighting did not finish".into()),
        }
    }
}

fn weigh(
    doc: &Document,
    session: &Session,
    cancel: &AtomicBool,
    progress: impl FnMut(f32),
) -> Result<Arc<Document>, String> {
    value_weighted(session, cancel, progress)
        .map(|s| document_like(doc, s))
        .map_err(|e| e.to_string())
}

/// A document of `session` that computes where `doc` does.
fn document_like(doc: &Document, session: Session) -> Arc<Document> {
    Arc::new(Document::new(session).with_analysis_device(doc.analysis_device().clone()))
}

fn session_bytes(session: &Session) -> u64 {
    let m = &session.meta.model;
    session
        .meta
        .inputs
        .iter()
        .map(|i| attention_bytes(m.layers, m.heads, i.tokens.len()))
        .sum()
}
