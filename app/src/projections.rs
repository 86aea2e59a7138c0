//! The query-key layouts of the open document: those the session brought, and those computed
//! since (PCA at once, UMAP and t-SNE in the background). Views read them every frame; the
//! projector thread adds to them; saving writes them back as `proj/{method}/{layer}/{head}`.

use headwise_engine::analysis::projection::Method;
use headwise_engine::session::Session;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One head's layout: [2N, dims], the N queries then the N keys.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dims: usize,
    pub points: Arc<Vec<f32>>,
    /// Changes whenever this head's layout is replaced, so the GPU copy is replaced too.
    pub version: u64,
    /// The points' centre and the half-width of the largest axis, for fitting them to a view.
    pub centre: [f32; 3],
    pub radius: f32,
}

impl Layout {
    pub fn new(dims: usize, points: Vec<f32>) -> Self {
        let n = points.len() / dims.max(1);
        let mut lo = [f32::INFINITY; 3];
        let mut hi = [f32::NEG_INFINITY; 3];
        for i in 0..n {
            for a in 0..dims.min(3) {
                let v = points[i * dims + a];
                if v.is_finite() {
                    lo[a] = lo[a].min(v);
                    hi[a] = hi[a].max(v);
                }
            }
        }
        let mut centre = [0.0; 3];
        let mut radius = 0.0f32;
        for a in 0..dims.min(3) {
            if lo[a] <= hi[a] {
                centre[a] = (lo[a] + hi[a]) / 2.0;
                radius = radius.max((hi[a] - lo[a]) / 2.0);
            }
        }
        Self {
            dims,
            points: Arc::new(points),
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            centre,
            radius: if radius > 0.0 { radius } else { 1.0 },
        }
    }

    pub fn len(&self) -> usize {
        self.points.len() / self.dims.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Key = (Method, usize, usize);
/// One head's joint-vector norms, [2N].
type Norms = Arc<Vec<f32>>;

#[derive(Default)]
pub struct ProjectionStore {
    layouts: RwLock<HashMap<Key, Layout>>,
    /// Each head's joint-vector norms [2N], by (layer, head).
    norms: RwLock<HashMap<(usize, usize), Norms>>,
    seeds: RwLock<HashMap<Method, u64>>,
    /// Bumped on every change: the app marks the session unsaved when it moves.
    changes: AtomicU64,
}

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

impl ProjectionStore {
    /// The layouts a session file holds.
    pub fn from_session(session: &Session) -> Self {
        let store = Self::default();
        let m = &session.meta.model;
        for method in Method::ALL {
            for layer in 0..m.layers {
                for head in 0..m.heads {
                    if let Some((dims, points)) = session.projection(method, layer, head) {
                        store.insert_quietly(method, layer, head, dims, points);
                    }
                }
            }
            if let Some(info) = session.meta.projections.get(method.name()) {
                store
                    .seeds
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(method, info.seed);
            }
        }
        store
    }

    fn insert_quietly(
        &self,
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
        points: Vec<f32>,
    ) {
        let layout = Layout::new(dims, points);
        self.layouts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method, layer, head), layout);
    }

    pub fn insert(
        &self,
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
        points: Vec<f32>,
        seed: u64,
    ) {
        self.insert_quietly(method, layer, head, dims, points);
        self.seeds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(method, seed);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_norms(&self, layer: usize, head: usize, norms: Vec<f32>) {
        self.norms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((layer, head), Arc::new(norms));
    }

    pub fn norms(&self, layer: usize, head: usize) -> Option<Arc<Vec<f32>>> {
        self.norms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(layer, head))
            .cloned()
    }

    /// The layout of `method` in `dims` dimensions, if there is one.
    pub fn get(&self, method: Method, layer: usize, head: usize, dims: usize) -> Option<Layout> {
        self.layouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(method, layer, head))
            .filter(|l| l.dims == dims)
            .cloned()
    }

    /// The layout to show while `method` is not there yet: it, else PCA.
    pub fn best(
        &self,
        method: Method,
        layer: usize,
        head: usize,
        dims: usize,
    ) -> Option<(Method, Layout)> {
        self.get(method, layer, head, dims)
            .map(|l| (method, l))
            .or_else(|| {
                self.get(Method::Pca, layer, head, dims)
                    .map(|l| (Method::Pca, l))
            })
    }

    /// How many heads have a `method` layout in `dims` dimensions.
    pub fn count(&self, method: Method, dims: usize) -> usize {
        self.layouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((m, _, _), l)| *m == method && l.dims == dims)
            .count()
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Writes every layout into `session` (for saving).
    pub fn write_into(&self, session: &mut Session) {
        let layouts = self.layouts.read().unwrap_or_else(|e| e.into_inner());
        let seeds = self.seeds.read().unwrap_or_else(|e| e.into_inner());
        for method in Method::ALL {
            // One dimension per method in a file: the one its newest layouts have.
            let newest = layouts
                .iter()
                .filter(|((m, _, _), _)| *m == method)
                .max_by_key(|(_, l)| l.version)
                .map(|(_, l)| l.dims);
            let Some(dims) = newest else { continue };
            for ((m, layer, head), layout) in layouts.iter() {
                if *m == method && layout.dims == dims {
                    session.set_projection(method, *layer, *head, dims, &layout.points);
                }
            }
            session.note_projection(method, dims, seeds.get(&method).copied().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench_views::synthetic_session;

    #[test]
    fn layouts_read_from_a_session_are_written_back_unchanged_with_their_seed() {
        let mut session = synthetic_session(2, 2, 5, 4);
        let points: Vec<f32> = (0..2 * 5 * 2).map(|i| i as f32 * 0.5).collect();
        session.set_projection(Method::Umap, 1, 0, 2, &points);
        session.note_projection(Method::Umap, 2, 42);
        let store = ProjectionStore::from_session(&session);
        let layout = store.get(Method::Umap, 1, 0, 2).expect("the stored layout");
        assert_eq!(*layout.points, points);
        assert_eq!(
            store.get(Method::Umap, 1, 0, 3).map(|l| l.dims),
            None,
            "other dims"
        );
        let mut saved = synthetic_session(2, 2, 5, 4);
        store.write_into(&mut saved);
        assert_eq!(saved.projection(Method::Umap, 1, 0), Some((2, points)));
        assert_eq!(saved.meta.projections["umap"].seed, 42);
        assert_eq!(store.changes(), 0, "reading a session is not a change");
    }

    #[test]
    fn pca_stands_in_until_the_asked_method_is_there_and_changes_are_counted() {
        let store = ProjectionStore::default();
        assert!(store.best(Method::Tsne, 0, 0, 2).is_none());
        store.insert(Method::Pca, 0, 0, 2, vec![0.0, 0.0, 1.0, 2.0], 0);
        assert_eq!(
            store.best(Method::Tsne, 0, 0, 2).map(|(m, _)| m),
            Some(Method::Pca)
        );
        store.insert(Method::Tsne, 0, 0, 2, vec![5.0, 5.0, 6.0, 7.0], 0);
        let (method, layout) = store.best(Method::Tsne, 0, 0, 2).unwrap();
        assert_eq!(method, Method::Tsne);
        assert_eq!((layout.centre, layout.radius), ([5.5, 6.0, 0.0], 1.0));
        assert_eq!(store.changes(), 2);
    }
}
