//! Numbers computed from a captured trace for the views: per-head metrics and aggregates over
//! heads and layers. Pure functions over host tensors, so the app and scripts share one definition.

pub mod aggregate;
pub mod artifacts;
pub mod change;
pub mod flow;
pub mod metrics;
pub mod projection;
pub mod relevance;
pub mod retrieval;
pub mod rollout;
pub mod rollout_device;
pub mod row_sums;
pub mod value_weighting;
