//! Where each head's queries and keys sit in one shared space: AttentionViz's joint query-key
//! embedding over a corpus ([`joint`]), laid out in 2 or 3 dimensions by PCA (at once, on the
//! device), UMAP or t-SNE (seeded, in the background), and stored in the session as
//! `proj/{method}/{layer}/{head}`, f32 [2N, dims]: the N queries, then the N keys.

pub mod joint;
pub mod knn;
pub mod pca;
mod rng;
pub mod trustworthiness;
pub mod tsne;
pub mod umap;

use crate::error::{EngineError, Result};
use crate::model::to_vec;
use crate::session::Session;
use burn::tensor::Device;
use joint::{HeadVectors, gather, joint_embedding};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Pca,
    Umap,
    Tsne,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Pca, Method::Umap, Method::Tsne];

    /// The name in tensor names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Pca => "pca",
            Method::Umap => "umap",
            Method::Tsne => "tsne",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Pca => "PCA",
            Method::Umap => "UMAP",
            Method::Tsne => "t-SNE",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown method '{s}' (pca, umap or tsne)"))
    }
}

/// Progress reporting and cancellation for a long projection.
pub struct Work<'a> {
    progress: &'a (dyn Fn(f32) + Sync),
    cancel: Option<&'a AtomicBool>,
}

impl<'a> Work<'a> {
    pub fn new(progress: &'a (dyn Fn(f32) + Sync), cancel: Option<&'a AtomicBool>) -> Self {
        Self { progress, cancel }
    }

    /// No progress shown, never cancelled.
    pub fn silent() -> Work<'static> {
        Work {
            progress: &|_| {},
            cancel: None,
        }
    }

    pub fn report(&self, fraction: f32) {
        (self.progress)(fraction.clamp(0.0, 1.0));
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The same cancellation, with progress mapped into [start, start + span] of this one's.
    fn part<'b>(&'b self, map: &'b (dyn Fn(f32) + Sync)) -> Work<'b> {
        Work {
            progress: map,
            cancel: self.cancel,
        }
    }
}

fn check_dims(method: Method, dims: usize) -> Result<()> {
    if (2..=3).contains(&dims) {
        Ok(())
    } else {
        Err(EngineError::Projection(format!(
            "{} lays out in 2 or 3 dimensions, not {dims}",
            method.label()
        )))
    }
}

/// PCA of the joint embedding of several heads at once: one [2n, dims] array per head.
pub fn pca_heads(heads: &[HeadVectors], dims: usize, device: &Device) -> Result<Vec<Vec<f32>>> {
    check_dims(Method::Pca, dims)?;
    pca::pca(joint_embedding(heads, device)?, dims)
}

/// One array per head: its layout, or the norms of its joint vectors.
pub type PerHead = Vec<Vec<f32>>;

/// [`pca_heads`] and, for each head, the norm of each of its 2n joint vectors.
pub fn pca_heads_with_norms(
    heads: &[HeadVectors],
    dims: usize,
    device: &Device,
) -> Result<(PerHead, PerHead)> {
    check_dims(Method::Pca, dims)?;
    let joint = joint_embedding(heads, device)?;
    Ok((pca::pca(joint.clone(), dims)?, joint::norms(joint)?))
}

/// One head's joint embedding laid out by `method`: [2n, dims]. `seed` matters to UMAP only
/// (t-SNE starts from PCA and draws no random numbers).
pub fn project_head(
    head: &HeadVectors,
    method: Method,
    dims: usize,
    seed: u64,
    device: &Device,
    work: &Work,
) -> Result<Vec<f32>> {
    check_dims(method, dims)?;
    let joint = joint_embedding(std::slice::from_ref(head), device)?;
    let start = pca::pca(joint.clone(), dims)?.remove(0);
    if method == Method::Pca {
        return Ok(start);
    }
    let points = to_vec(joint)?;
    let (n, d) = (2 * head.n, head.d);
    let k = match method {
        Method::Umap => umap::NEIGHBOURS - 1,
        _ => tsne::neighbour_count(n),
    };
    // Neighbours take about a tenth of the time, the layout the rest.
    let cancelled = || work.is_cancelled();
    let nn = knn::nearest_neighbours(&points, n, d, k, device, &cancelled)?
        .ok_or(EngineError::Cancelled)?;
    work.report(0.1);
    let layout_progress = |f: f32| work.report(0.1 + 0.9 * f);
    let layout_work = work.part(&layout_progress);
    match method {
        Method::Umap => umap::umap(&nn, &start, dims, seed, &layout_work),
        _ => tsne::tsne(&nn, &start, dims, &layout_work),
    }
}

/// Projects `heads` ((layer, head) pairs; all of them when empty) of a session's corpus and
/// stores each as `proj/{method}/{layer}/{head}`. PCA runs a layer's heads as one batch.
pub fn project_session(
    session: &mut Session,
    method: Method,
    dims: usize,
    seed: u64,
    heads: &[(usize, usize)],
    device: &Device,
    work: &Work,
) -> Result<()> {
    check_dims(method, dims)?;
    let m = session.meta.model.clone();
    let chosen: Vec<(usize, usize)> = if heads.is_empty() {
        (0..m.layers)
            .flat_map(|l| (0..m.heads).map(move |h| (l, h)))
            .collect()
    } else {
        heads.to_vec()
    };
    if let Some(&(l, h)) = chosen.iter().find(|&&(l, h)| l >= m.layers || h >= m.heads) {
        return Err(EngineError::Projection(format!(
            "no head {l}.{h}: the model has {} layers of {} heads",
            m.layers, m.heads
        )));
    }
    if session.layers.is_empty() {
        return Err(EngineError::Projection(
            "the session has no inputs to project".into(),
        ));
    }
    let total = chosen.len();
    let mut done = 0usize;
    if method == Method::Pca {
        let mut by_layer: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for &(l, h) in &chosen {
            by_layer.entry(l).or_default().push(h);
        }
        for (layer, heads) in by_layer {
            if work.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            let vectors: Vec<HeadVectors> = heads
                .iter()
                .map(|&h| gather(&session.layers, layer, h, m.heads, m.kv_heads))
                .collect();
            let layouts = pca_heads(&vectors, dims, device)?;
            for (&h, layout) in heads.iter().zip(layouts) {
                session.set_projection(method, layer, h, dims, &layout);
            }
            done += heads.len();
            work.report(done as f32 / total as f32);
        }
    } else {
        for &(layer, head) in &chosen {
            let vectors = gather(&session.layers, layer, head, m.heads, m.kv_heads);
            let base = done as f32 / total as f32;
            let progress = |f: f32| work.report(base + f / total as f32);
            let layout = project_head(&vectors, method, dims, seed, device, &work.part(&progress))?;
            session.set_projection(method, layer, head, dims, &layout);
            done += 1;
        }
    }
    session.note_projection(method, dims, seed);
    Ok(())
}
