//! Regions of a head whose attention is not materialised (long inputs), reduced to the pixels
//! the head view draws: computed from q, k and lse in a job as the user pans and zooms, the
//! last finished regions kept so the view draws them while the newest is under way.

use super::lock;
use crate::document::Document;
use crate::jobs::{JobSlot, Repaint};
use crate::render::heatmap::Region;
use std::sync::{Arc, Mutex};

/// What a region is of: (input, layer, head, region).
pub type RegionKey = (usize, usize, usize, Region);

/// Finished regions kept: the newest few, so zooming back shows them at once.
const KEPT: usize = 8;

pub struct RegionCache {
    state: Mutex<State>,
}

struct State {
    done: Vec<(RegionKey, Arc<Vec<f32>>)>,
    computing: JobSlot<RegionKey, Arc<Vec<f32>>>,
}

impl Default for RegionCache {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                done: Vec::new(),
                computing: JobSlot::new("attention region"),
            }),
        }
    }
}

impl RegionCache {
    /// The pixels of a finished region.
    pub fn get(
        &self,
        input: usize,
        layer: usize,
        head: usize,
        region: Region,
    ) -> Option<Arc<Vec<f32>>> {
        let mut state = lock(&self.state);
        state.collect();
        let key = (input, layer, head, region);
        state
            .done
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, pixels)| pixels.clone())
    }

    /// Asks for `region` of a head and returns what to draw now: the region itself when it is
    /// done, else the newest finished region of the same head (drawn where it lies) while a job
    /// computes the one asked for. `inline` computes it at once (offscreen figures, drawn once).
    pub fn request(
        &self,
        doc: &Arc<Document>,
        (input, layer, head): (usize, usize, usize),
        region: Region,
        repaint: &Repaint,
        inline: bool,
    ) -> Option<Region> {
        let key = (input, layer, head, region);
        let mut state = lock(&self.state);
        state.collect();
        if state.done.iter().any(|(k, _)| *k == key) {
            return Some(region);
        }
        if inline {
            let pixels = compute(doc, key)?;
            state.keep(key, pixels);
            return Some(region);
        }
        if state.computing.key() != Some(&key) {
            let held = doc.clone();
            state.computing.start(key, repaint, move |_| {
                compute(&held, key).unwrap_or_default()
            });
        }
        state
            .done
            .iter()
            .rev()
            .find(|((i, l, h, _), _)| (*i, *l, *h) == (input, layer, head))
            .map(|((_, _, _, r), _)| *r)
    }

    /// Whether a region is being computed.
    pub fn busy(&self) -> bool {
        lock(&self.state).computing.busy()
    }
}

impl State {
    fn collect(&mut self) {
        if let Some((key, pixels)) = self.computing.poll() {
            self.keep(key, pixels);
        }
    }

    fn keep(&mut self, key: RegionKey, pixels: Arc<Vec<f32>>) {
        self.done.retain(|(k, _)| *k != key);
        self.done.push((key, pixels));
        if self.done.len() > KEPT {
            self.done.remove(0);
        }
    }
}

fn compute(doc: &Document, (input, layer, head, region): RegionKey) -> Option<Arc<Vec<f32>>> {
    let parts = doc.session.qk_parts(input, layer)?;
    let [r0, r1] = region.rows.map(|v| v as usize);
    let [c0, c1] = region.cols.map(|v| v as usize);
    let side = region.pixels as usize;
    Some(Arc::new(parts.attention().region(
        head,
        r0..r1,
        c0..c1,
        [side, side],
        region.reduce,
    )))
}
