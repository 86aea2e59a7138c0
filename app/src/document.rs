//! The open session as the views see it: the in-memory store that every view queries each
//! frame, and the caches of what is derived from it. Immutable; a new run or another file makes
//! a new document with a new generation (which tells the GPU side to drop its old buffers) and
//! empty caches.

use crate::caches::Caches;
use crate::projections::ProjectionStore;
use crate::render::heatmap::{DeviceMatrix, Matrix, MatrixKey, MatrixSource};
use headwise_engine::analysis::aggregate::Reduce;
use headwise_engine::analysis::metrics::max_pool_row;
use headwise_engine::device::{Device, DeviceChoice, create_device};
use headwise_engine::device_buffer::DeviceBuffer;
use headwise_engine::session::Session;
use headwise_engine::trace::Trace;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use crate::caches::metrics::Metrics;

/// Inputs longer than this are drawn in the overview from a max-pooled copy.
pub const THUMBNAIL_ABOVE: usize = 512;
/// The side of that copy.
pub const THUMBNAIL_SIDE: usize = 256;

/// Each layer's attention [heads, T, T] where the GPU computed it, `[input][layer]`; None
/// where it is not on the GPU (the heatmap then uploads the session's copy).
pub type DeviceAttention = Vec<Vec<Option<DeviceBuffer>>>;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

pub struct Document {
    pub session: Session,
    pub generation: u64,
    /// `special[input][token]`
    pub special: Vec<Vec<bool>>,
    /// What is derived from the session: metrics, aggregates, rollouts, textures, ...
    pub caches: Caches,
    /// The query-key layouts: the session's, and those computed since it opened.
    pub projections: ProjectionStore,
    /// The attention as the GPU computed it, drawn from there (runs on a GPU only).
    device_attention: DeviceAttention,
    /// Where analyses that follow the sliders (rollout) compute.
    analysis_device: Device,
}

impl Document {
    pub fn new(session: Session) -> Self {
        let special: Vec<Vec<bool>> = session
            .meta
            .inputs
            .iter()
            .map(|i| i.special_mask())
            .collect();
        let caches = Caches::default();
        caches.metrics.fill_if_small(&session, &special);
        Self {
            projections: ProjectionStore::from_session(&session),
            session,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            special,
            caches,
            device_attention: Vec::new(),
            analysis_device: default_analysis_device(),
        }
    }

    /// The same document, computing its analyses on `device` (the window's compute device).
    pub fn with_analysis_device(mut self, device: Device) -> Self {
        self.analysis_device = device;
        self
    }

    /// Where analyses that follow the sliders (rollout) compute.
    pub fn analysis_device(&self) -> &Device {
        &self.analysis_device
    }

    /// Every head's metrics if they are worked out yet; the window shows the rest of a view
    /// meanwhile.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.caches.metrics.get()
    }

    /// Every head's metrics, working them out first (or waiting for the job that does).
    pub fn wait_for_metrics(&self) -> &Metrics {
        self.caches.metrics.wait(&self.session, &self.special)
    }

    /// The same document, drawing its heads from the GPU buffers the run left them in.
    pub fn with_device_attention(mut self, attention: DeviceAttention) -> Self {
        self.device_attention = attention;
        self
    }

    /// How many layers' attention is drawn from the compute's own buffers.
    pub fn layers_in_place(&self) -> usize {
        self.device_attention.iter().flatten().flatten().count()
    }

    pub fn layers(&self) -> usize {
        self.session.meta.model.layers
    }

    pub fn heads(&self) -> usize {
        self.session.meta.model.heads
    }

    pub fn inputs(&self) -> usize {
        self.session.meta.inputs.len()
    }

    pub fn tokens(&self, input: usize) -> &[String] {
        self.session
            .meta
            .inputs
            .get(input)
            .map_or(&[], |i| &i.tokens)
    }

    /// The first token the model generated in input `input` (`--generate`), if it has any.
    pub fn first_generated(&self, input: usize) -> Option<usize> {
        let info = self.session.meta.inputs.get(input)?;
        let generated = info.generated.filter(|&g| g > 0)?;
        Some(info.tokens.len().saturating_sub(generated))
    }

    /// One head's weights [T, T], borrowed from the session; None where the input's attention
    /// is kept as q, k and lse only (see [`Document::materialised`]).
    pub fn head(&self, input: usize, layer: usize, head: usize) -> Option<&[f32]> {
        let attn = self.session.layers.get(input)?.get(layer)?.attn.as_ref()?;
        let t = attn.shape[1];
        attn.data.get(head * t * t..(head + 1) * t * t)
    }

    /// Whether input `input`'s attention is in memory as matrices: false for long inputs, whose
    /// views compute what they show from q, k and lse (rows, regions, thumbnails).
    pub fn materialised(&self, input: usize) -> bool {
        self.session
            .layers
            .get(input)
            .is_some_and(|layers| layers.iter().all(|l| l.attn.is_some()))
    }

    /// Query `query`'s row of one head, [T]: read from the matrix, or computed from q, k and lse.
    pub fn row(&self, input: usize, layer: usize, head: usize, query: usize) -> Option<Vec<f32>> {
        let t = self.tokens(input).len();
        if query >= t || head >= self.heads() {
            return None;
        }
        if let Some(weights) = self.head(input, layer, head) {
            return weights.get(query * t..(query + 1) * t).map(<[f32]>::to_vec);
        }
        let parts = self.session.qk_parts(input, layer)?;
        let mut row = vec![0.0; t];
        parts.attention().row(head, query, 0..t, &mut row);
        Some(row)
    }

    /// An aggregate over heads [T, T], computed once per document.
    pub fn reduced(&self, input: usize, matrix: Matrix) -> Option<Arc<Vec<f32>>> {
        self.caches.reduced.get(&self.session, input, matrix)
    }

    /// The weight at (query `row`, key `col`) of any matrix a view can show.
    pub fn weight(&self, input: usize, matrix: Matrix, row: usize, col: usize) -> Option<f32> {
        let t = self.tokens(input).len();
        if row >= t || col >= t {
            return None;
        }
        match matrix {
            Matrix::Head { layer, head } => match self.head(input, layer, head) {
                Some(weights) => weights.get(row * t + col).copied(),
                None => {
                    let parts = self.session.qk_parts(input, layer)?;
                    let mut cell = [0.0];
                    parts.attention().row(head, row, col..col + 1, &mut cell);
                    Some(cell[0])
                }
            },
            Matrix::Change { layer, head } => {
                let base = self.session.meta.inputs.get(input)?.base?;
                let (a, b) = (
                    self.head(input, layer, head)?,
                    self.head(base, layer, head)?,
                );
                Some(a.get(row * t + col)? - b.get(row * t + col)?)
            }
            Matrix::Gradient { layer, head, .. } => {
                let grad = self.session.gradient_attention(input, layer)?;
                grad.get((head * t + row) * t + col).copied()
            }
            _ => self.reduced(input, matrix)?.get(row * t + col).copied(),
        }
    }

    /// One head's ∂target/∂A ⊙ A scaled by its largest magnitude: (g/m + 1) / 2 when
    /// `signed` (diverging map), else max(g, 0)/m.
    fn gradient_matrix(
        &self,
        input: usize,
        layer: usize,
        head: usize,
        signed: bool,
    ) -> Option<Vec<f32>> {
        let t = self.tokens(input).len();
        let grad = self.session.gradient_attention(input, layer)?;
        let values = grad.get(head * t * t..(head + 1) * t * t)?;
        let largest = values
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        Some(
            values
                .iter()
                .map(|g| {
                    if signed {
                        (g / largest + 1.0) / 2.0
                    } else {
                        g.max(0.0) / largest
                    }
                })
                .collect(),
        )
    }

    /// An edited run's head minus its base's, [T, T], mapped to (Δ + 1) / 2 for the diverging
    /// colour map; None unless both are materialised over the same tokens.
    fn change_matrix(&self, input: usize, layer: usize, head: usize) -> Option<Vec<f32>> {
        let base = self.session.meta.inputs.get(input)?.base?;
        let (a, b) = (
            self.head(input, layer, head)?,
            self.head(base, layer, head)?,
        );
        (a.len() == b.len()).then(|| a.iter().zip(b).map(|(x, y)| (x - y + 1.0) / 2.0).collect())
    }

    /// The weights of any matrix a view can show, at full size.
    pub fn full_matrix(&self, input: usize, matrix: Matrix) -> Option<(usize, Vec<f32>)> {
        let t = self.tokens(input).len();
        match matrix {
            Matrix::Head { layer, head } => Some((t, self.head(input, layer, head)?.to_vec())),
            Matrix::Change { layer, head } => Some((t, self.change_matrix(input, layer, head)?)),
            Matrix::Gradient {
                layer,
                head,
                signed,
            } => Some((t, self.gradient_matrix(input, layer, head, signed)?)),
            _ => Some((t, self.reduced(input, matrix)?.to_vec())),
        }
    }
}

/// wgpu on a real GPU, burn's CPU backend otherwise (what `--device auto` picks), made once.
fn default_analysis_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            create_device(DeviceChoice::Auto)
                .or_else(|_| create_device(DeviceChoice::Cpu))
                .map(|d| d.device)
                .unwrap_or_else(|_| Device::flex())
        })
        .clone()
}

/// The most attention a run keeps on the GPU for the views to draw in place, in bytes. wgpu
/// does not tell how much memory a GPU has; past this, a run's attention is only read back, and
/// the views upload what they show, as after a run on the CPU.
pub const IN_PLACE_BUDGET_BYTES: u64 = 2 << 30;

/// The GPU buffers of the traces' attention. Call it once the session holds its host copy:
/// reading that back also waited for the GPU to finish the attention. Empty after a CPU run and
/// over the budget.
pub fn device_attention(traces: &[Trace]) -> DeviceAttention {
    let bytes: u64 = traces
        .iter()
        .flat_map(|t| &t.layers)
        .filter_map(|l| l.attn.as_ref())
        .map(|a| a.shape().num_elements() as u64 * 4)
        .sum();
    if bytes > IN_PLACE_BUDGET_BYTES {
        return Vec::new();
    }
    traces
        .iter()
        .map(|t| {
            t.layers
                .iter()
                .map(|l| l.attn.as_ref().and_then(DeviceBuffer::of))
                .collect()
        })
        .collect()
}

/// Max-pools a [t, t] matrix down to [side, side], so a thumbnail keeps every peak.
pub fn max_pool(values: &[f32], t: usize, side: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; side * side];
    for (r, row) in values.chunks_exact(t.max(1)).take(t).enumerate() {
        let pr = r * side / t;
        max_pool_row(row, &mut out[pr * side..(pr + 1) * side]);
    }
    out
}

impl MatrixSource for Document {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn device_matrix(&self, key: MatrixKey) -> Option<DeviceMatrix> {
        let Matrix::Head { layer, head } = key.matrix else {
            return None;
        };
        if key.thumbnail || head >= self.heads() {
            return None;
        }
        let buffer = self.device_attention.get(key.input)?.get(layer)?.as_ref()?;
        let side = self.tokens(key.input).len();
        Some(DeviceMatrix {
            buffer: buffer.buffer().clone(),
            offset: buffer.offset(),
            size: buffer.size(),
            first: (head * side * side) as u64,
            side,
        })
    }

    fn matrix(&self, key: MatrixKey) -> Option<(usize, Vec<f32>)> {
        if let Some(region) = key.region {
            let Matrix::Head { layer, head } = key.matrix else {
                return None;
            };
            let pixels = self.caches.regions.get(key.input, layer, head, region)?;
            return Some((region.pixels as usize, pixels.as_ref().clone()));
        }
        if key.thumbnail
            && let Matrix::Head { layer, head } = key.matrix
            && self.head(key.input, layer, head).is_none()
        {
            let thumbnail = self.caches.metrics.thumbnail(key.input, layer, head)?;
            let side = (thumbnail.len() as f64).sqrt() as usize;
            return Some((side, thumbnail.to_vec()));
        }
        let (t, values) = self.full_matrix(key.input, key.matrix)?;
        if key.thumbnail && t > THUMBNAIL_ABOVE {
            Some((THUMBNAIL_SIDE, max_pool(&values, t, THUMBNAIL_SIDE)))
        } else {
            Some((t, values))
        }
    }

    fn pending(&self, key: MatrixKey) -> bool {
        // Thumbnails and regions computed from q, k and lse arrive from a job.
        key.region.is_some() || (key.thumbnail && !self.materialised(key.input))
    }

    fn visible_tokens(&self, key: MatrixKey, hide_special: bool) -> Vec<u32> {
        let special = self.special.get(key.input).map_or(&[][..], |s| s);
        (0..self.tokens(key.input).len())
            .filter(|&i| !(hide_special && special.get(i).copied().unwrap_or(false)))
            .map(|i| i as u32)
            .collect()
    }
}

/// How the overview draws a matrix: a thumbnail for long inputs and for attention that is not
/// materialised, else the matrix itself. Also the matrix's side as drawn.
pub fn thumbnail_key(doc: &Document, input: usize, matrix: Matrix) -> (MatrixKey, usize) {
    let tokens = doc.tokens(input).len();
    let thumbnail = tokens > THUMBNAIL_ABOVE || !doc.materialised(input);
    let key = MatrixKey {
        input,
        matrix,
        thumbnail,
        region: None,
    };
    (
        key,
        if thumbnail {
            thumbnail_side(tokens)
        } else {
            tokens
        },
    )
}

/// The side of a thumbnail of an input of `tokens` tokens.
pub fn thumbnail_side(tokens: usize) -> usize {
    tokens.clamp(1, THUMBNAIL_SIDE)
}

/// The mean and max reductions a view can pick, with their labels.
pub const REDUCTIONS: [(Reduce, &str); 2] = [(Reduce::Mean, "mean"), (Reduce::Max, "max")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pooling_keeps_the_largest_weight_of_each_block() {
        let t = 4;
        let mut m = vec![0.0; 16];
        m[t + 3] = 0.9;
        m[2 * t] = 0.5;
        let pooled = max_pool(&m, t, 2);
        assert_eq!(pooled, vec![0.0, 0.9, 0.5, 0.0]);
    }
}
