//! Attention flow (the maximum flow through the layers to one query token) for the image view:
//! seconds of work, so it is worked out in a job and handed back when done. The engine's flow
//! cannot stop half-way, so a superseded computation runs to its end and is dropped; the
//! newest starts after it, and computations never pile up.

use super::{hash_of, lock};
use crate::jobs::{JobSlot, Repaint};
use headwise_engine::analysis::flow::attention_flow;
use headwise_engine::analysis::rollout::RolloutSettings;
use headwise_engine::session::Session;
use std::sync::{Arc, Mutex};

/// A flow being worked out, or its result.
#[derive(Debug, Clone, Default)]
pub struct FlowRow {
    pub fraction: f32,
    pub result: Option<Arc<Vec<f32>>>,
}

#[derive(Default)]
pub struct FlowCache {
    state: Mutex<State>,
}

struct State {
    done: Option<(u64, Arc<Vec<f32>>)>,
    computing: JobSlot<u64, Arc<Vec<f32>>>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            done: None,
            computing: JobSlot::new("attention flow"),
        }
    }
}

impl FlowCache {
    /// The flow to `query` of `input` for settings `r`: started on first request, then its
    /// progress until it is done.
    pub fn row(
        &self,
        session: &Session,
        input: usize,
        query: usize,
        r: &RolloutSettings,
        repaint: &Repaint,
    ) -> FlowRow {
        let key = hash_of((
            input,
            query,
            r.fusion,
            r.start_layer,
            r.discard_ratio.to_bits(),
        ));
        let mut state = lock(&self.state);
        if let Some(done) = state.computing.poll() {
            state.done = Some(done);
        }
        if let Some((k, row)) = &state.done
            && *k == key
        {
            return FlowRow {
                fraction: 1.0,
                result: Some(row.clone()),
            };
        }
        if state.computing.key() != Some(&key) {
            let Some(layers) = session.layers.get(input) else {
                return FlowRow::default();
            };
            // Flow needs every layer's full matrix; long inputs keep none.
            let Some(layers) = layers
                .iter()
                .map(|l| l.attn.clone())
                .collect::<Option<Vec<_>>>()
            else {
                return FlowRow::default();
            };
            let settings = *r;
            state.computing.start(key, repaint, move |cx| {
                let progress = |fraction: f32| cx.progress("attention flow", Some(fraction));
                Arc::new(attention_flow(&layers, &settings, query, &progress))
            });
        }
        FlowRow {
            fraction: state
                .computing
                .progress()
                .and_then(|p| p.fraction)
                .unwrap_or(0.0),
            result: None,
        }
    }
}
