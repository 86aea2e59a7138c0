//! The attention rollout's rows for the image view. The input's attention goes to the compute
//! device once; the layer matrices are rebuilt there when a slider moves (in a job for long
//! inputs, keeping the last row on screen meanwhile; builds never pile up while a slider is
//! dragged), and following the mouse reuses them.

use super::{hash_of, lock};
use crate::jobs::{JobSlot, Repaint};
use headwise_engine::analysis::rollout::RolloutSettings;
use headwise_engine::analysis::rollout_device::{DeviceLayerMatrices, DeviceLayers};
use headwise_engine::device::Device;
use headwise_engine::session::Session;
use std::sync::{Arc, Mutex};

/// Inputs with more tokens than this get their layer matrices built off the UI thread when a
/// slider moves (measured on a 2-core CPU: 26 ms at 257 tokens, 101 ms at 513, 421 ms at
/// 1,025); smaller ones at once.
pub const IN_BACKGROUND_ABOVE: usize = 256;

/// (input, the settings' hash): what a build is for.
type BuildKey = (usize, u64);
type Built = (Arc<DeviceLayers>, Arc<DeviceLayerMatrices>);

#[derive(Default)]
pub struct RolloutCache {
    state: Mutex<State>,
}

struct State {
    /// The newest finished build.
    built: Option<(BuildKey, Built)>,
    building: JobSlot<BuildKey, Built>,
    /// The last row handed out: (build, query) and the row.
    row: Option<(BuildKey, usize, Arc<Vec<f32>>)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            built: None,
            building: JobSlot::new("rollout"),
            row: None,
        }
    }
}

impl RolloutCache {
    /// The rollout row of `query` in `input` for settings `r`; while the newest settings' build
    /// is under way, the last row of the same input, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        &self,
        session: &Session,
        device: &Device,
        input: usize,
        query: usize,
        r: &RolloutSettings,
        repaint: &Repaint,
        inline: bool,
    ) -> Option<Vec<f32>> {
        let key: BuildKey = (
            input,
            hash_of((r.fusion, r.start_layer, r.discard_ratio.to_bits())),
        );
        let mut state = lock(&self.state);
        if let Some((k, q, row)) = &state.row
            && *k == key
            && *q == query
        {
            return Some(row.as_ref().clone());
        }
        if let Some(done) = state.building.poll() {
            state.built = Some(done);
        }
        let ready = state
            .built
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, (_, matrices))| matrices.clone());
        // A picture drawn once (offscreen) computes it now: there is no next frame.
        let long = session.meta.inputs.get(input)?.tokens.len() > IN_BACKGROUND_ABOVE && !inline;
        let matrices = match ready {
            Some(matrices) => matrices,
            None if long && state.building.key() == Some(&key) => {
                return kept_row(&state, input);
            }
            None => {
                // The attention already on the device for this input, if the last build put
                // it there.
                let uploaded = state
                    .built
                    .as_ref()
                    .filter(|((i, _), _)| *i == input)
                    .map(|(_, (layers, _))| layers.clone());
                // Rollout needs every layer's full matrix; long inputs keep none.
                let layers: Vec<_> = session
                    .layers
                    .get(input)?
                    .iter()
                    .map(|l| l.attn.clone())
                    .collect::<Option<_>>()?;
                let (device, settings) = (device.clone(), *r);
                let build = move || {
                    let uploaded = uploaded
                        .unwrap_or_else(|| Arc::new(DeviceLayers::upload(&layers, &device)));
                    let matrices = Arc::new(uploaded.matrices(&settings));
                    (uploaded, matrices)
                };
                if long {
                    state.building.start(key, repaint, move |_| build());
                    return kept_row(&state, input);
                }
                state.building.cancel();
                let built = build();
                let matrices = built.1.clone();
                state.built = Some((key, built));
                matrices
            }
        };
        let row = Arc::new(matrices.row(query).ok()?);
        state.row = Some((key, query, row.clone()));
        Some(row.as_ref().clone())
    }
}

/// The last row of `input` handed out, kept on screen while the newest settings' build runs.
fn kept_row(state: &State, input: usize) -> Option<Vec<f32>> {
    state
        .row
        .as_ref()
        .filter(|((i, _), _, _)| *i == input)
        .map(|(_, _, row)| row.as_ref().clone())
}
