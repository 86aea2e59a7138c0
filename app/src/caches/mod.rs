//! Derived data of the open document, each kind in a cache of its own (one file each), keyed by
//! what it depends on. A document owns its caches, and a new run or another file makes a new
//! document, so every cache starts empty when the document changes. Views read caches and never
//! compute or keep derived data themselves; caches that take long compute in a job
//! ([`crate::jobs`]) and keep the last value on screen meanwhile.

pub mod artifacts;
pub mod changes;
pub mod corpus_index;
pub mod flow;
pub mod metrics;
pub mod point_styles;
pub mod reduced;
pub mod regions;
pub mod rollout;
pub mod screen_positions;
pub mod textures;
pub mod token_figures;
pub mod weighted;

use std::hash::{Hash, Hasher};

/// Every cache of one document.
#[derive(Default)]
pub struct Caches {
    pub metrics: metrics::MetricsCache,
    pub reduced: reduced::ReducedCache,
    pub regions: regions::RegionCache,
    pub rollout: rollout::RolloutCache,
    pub flow: flow::FlowCache,
    pub artifacts: artifacts::ArtifactsCache,
    pub changes: changes::ChangeCache,
    pub corpus_index: corpus_index::CorpusIndexCache,
    pub point_styles: point_styles::PointStyleCache,
    pub screen_positions: screen_positions::ScreenPositionsCache,
    pub textures: textures::TextureCache,
    pub token_figures: token_figures::TokenFiguresCache,
    pub weighted: weighted::WeightedCache,
}

/// A key for values too large to compare whole (settings with floats, a camera matrix).
pub fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Float bits, so settings with floats can be hashed.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Locks a cache's state; a panic elsewhere while it was held leaves data that is still usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
