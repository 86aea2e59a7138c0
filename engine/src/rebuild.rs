//! Attention computed on the host from a layer's q, k and lse, for sessions that store none
//! (format 2 lets `attn/...` be absent: long inputs, `--attention none`, Python captures past
//! their budget): whole when it is small, else one row, one head's rows, or a region reduced to
//! a grid of block maxima or means, never holding more than a row per thread. DESIGN's
//! definition, exactly: `a_ij = exp(z_ij − lse_i)` with `z = softcap(scale · q·kᵀ)`, zero where
//! the mask hides the key (later keys in a causal layer, keys outside the layer's window);
//! query head h reads key head h / (heads / kv_heads).

use crate::analysis::aggregate::Reduce;
use crate::attention::LayerAttention;
use crate::host::HostTensor;
use crate::model::cpu_kernels::exp;
use crate::model::key_mask::KeyMask;
use rayon::prelude::*;
use std::ops::Range;

/// One layer of one input's attention, as q, k and lse.
#[derive(Debug, Clone)]
pub struct QkAttention<'a> {
    q: &'a [f32],
    k: &'a [f32],
    lse: &'a [f32],
    /// Log-weights added to every query's logit of key j after soft-capping, per query head,
    /// [heads, T] (a `scale` edit's ln F; value-weighted attention adds ln‖v_j‖).
    key_bias: Option<&'a [f32]>,
    layer: LayerAttention,
    /// Which keys each query sees: the forward pass's own rule for one input.
    mask: KeyMask,
    heads: usize,
    t: usize,
    d: usize,
    group: usize,
}

impl<'a> QkAttention<'a> {
    /// `q` [heads, T, d], `k` [kv_heads, T, d], `lse` [heads, T] row-major; None when the
    /// shapes disagree (or q and k are zero-width: captured without them).
    pub fn new(
        q: &'a HostTensor,
        k: &'a HostTensor,
        lse: &'a [f32],
        layer: LayerAttention,
        causal: bool,
    ) -> Option<Self> {
        let [heads, t, d] = <[usize; 3]>::try_from(q.shape.as_slice()).ok()?;
        let [kv_heads, kt, kd] = <[usize; 3]>::try_from(k.shape.as_slice()).ok()?;
        let consistent = kv_heads > 0
            && heads % kv_heads == 0
            && kt == t
            && kd == d
            && d > 0
            && lse.len() == heads.checked_mul(t)?
            && q.data.len() == heads.checked_mul(t)?.checked_mul(d)?
            && k.data.len() == kv_heads.checked_mul(t)?.checked_mul(d)?;
        consistent.then_some(Self {
            q: &q.data,
            k: &k.data,
            lse,
            key_bias: None,
            layer,
            mask: KeyMask::new(&[t], causal, None, layer.window),
            heads,
            t,
            d,
            group: heads / kv_heads,
        })
    }

    /// The same attention with `bias` [heads, T] added to every query's logit of each key
    /// (after soft-capping); the lse must be that of the biased logits. Ignored when its length
    /// is not heads × T.
    pub fn with_key_bias(mut self, bias: &'a [f32]) -> Self {
        if bias.len() == self.heads * self.t {
            self.key_bias = Some(bias);
        }
        self
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn tokens(&self) -> usize {
        self.t
    }

    /// The keys query `i` may see.
    pub fn visible(&self, i: usize) -> Range<usize> {
        self.mask.visible(i)
    }

    /// Row `i` of head `h` over the keys `cols` into `out` (zero where masked).
    pub fn row(&self, h: usize, i: usize, cols: Range<usize>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.row_avx2(h, i, cols, out) };
        }
        self.row_body(h, i, cols, out);
    }

    /// [`QkAttention::row`] compiled with AVX2, where `exp`'s `floor` is one instruction and the
    /// element-wise pass vectorises (without it, a call to libm's `floorf` per value). The same
    /// operations in the same order: the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn row_avx2(&self, h: usize, i: usize, cols: Range<usize>, out: &mut [f32]) {
        self.row_body(h, i, cols, out);
    }

    #[inline(always)]
    fn row_body(&self, h: usize, i: usize, cols: Range<usize>, out: &mut [f32]) {
        let (d, t) = (self.d, self.t);
        let out = &mut out[..cols.len()];
        let visible = self.visible(i);
        let (lo, hi) = (visible.start.max(cols.start), visible.end.min(cols.end));
        out.fill(0.0);
        if lo >= hi {
            return;
        }
        let qi = &self.q[(h * t + i) * d..][..d];
        let keys = &self.k[(h / self.group * t + lo) * d..(h / self.group * t + hi) * d];
        let cells = &mut out[lo - cols.start..hi - cols.start];
        // Dot products first, then the element-wise part in one pass the compiler vectorises.
        for (cell, kj) in cells.iter_mut().zip(keys.chunks_exact(d)) {
            *cell = dot(qi, kj);
        }
        let lse = self.lse[h * t + i];
        if let Some(bias) = self.key_bias {
            let bias = &bias[h * t + lo..h * t + hi];
            for (cell, b) in cells.iter_mut().zip(bias) {
                *cell = exp(self.layer.logit(*cell) + b - lse);
            }
            return;
        }
        match self.layer.softcap {
            None => {
                let scale = self.layer.scale;
                for cell in cells.iter_mut() {
                    *cell = exp(scale * *cell - lse);
                }
            }
            Some(_) => {
                for cell in cells.iter_mut() {
                    *cell = exp(self.layer.logit(*cell) - lse);
                }
            }
        }
    }

    /// Head `h`'s rows `rows` in order over the keys `cols`, each handed to `visit` with its
    /// query index; one row of scratch.
    pub fn for_each_row(
        &self,
        h: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        mut visit: impl FnMut(usize, &[f32]),
    ) {
        let mut scratch = vec![0.0f32; cols.len()];
        for i in rows {
            self.row(h, i, cols.clone(), &mut scratch);
            visit(i, &scratch);
        }
    }

    /// The region `rows` × `cols` of head `h` reduced to `[height, width]` pixels (row-major),
    /// each the max or mean of the cells it covers (masked cells count as 0). Pixels split the region evenly; when the
    /// grid is larger than the region, cells repeat.
    pub fn region(
        &self,
        h: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        [height, width]: [usize; 2],
        reduce: Reduce,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; height * width];
        if rows.is_empty() || cols.is_empty() || width == 0 {
            return out;
        }
        let span = |n: usize, cells: usize, p: usize| -> Range<usize> {
            let a = p * n / cells;
            let b = ((p + 1) * n / cells).max(a + 1).min(n);
            a..b
        };
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(py, pixels)| {
                let source = span(rows.len(), height, py);
                let mut counts = vec![0usize; width];
                let mut scratch = vec![0.0f32; cols.len()];
                for i in source.start + rows.start..source.end + rows.start {
                    self.row(h, i, cols.clone(), &mut scratch);
                    for (px, (pixel, count)) in pixels.iter_mut().zip(&mut counts).enumerate() {
                        let cells = &scratch[span(cols.len(), width, px)];
                        match reduce {
                            Reduce::Max => {
                                *pixel = cells.iter().fold(*pixel, |m, &v| m.max(v));
                            }
                            Reduce::Mean => {
                                *pixel += cells.iter().sum::<f32>();
                                *count += cells.len();
                            }
                        }
                    }
                }
                if reduce == Reduce::Mean {
                    for (pixel, count) in pixels.iter_mut().zip(counts) {
                        *pixel /= count.max(1) as f32;
                    }
                }
            });
        out
    }

    /// The whole layer, [heads, T, T].
    pub fn materialise(&self) -> HostTensor {
        let t = self.t;
        let mut out = vec![0.0f32; self.heads * t * t];
        out.par_chunks_mut(t.max(1))
            .enumerate()
            .for_each(|(row, cells)| self.row(row / t, row % t, 0..t, cells));
        HostTensor::new(vec![self.heads, t, t], out)
    }
}

/// q·k in eight lanes, so that it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// One layer's attention, [heads, T, T]. `q` is [heads, T, d], `k` [kv_heads, T, d] and
/// `lse` [heads, T] row-major.
/// `key_bias` [heads, T]: what edits add to each key's logits (see
/// [`QkAttention::with_key_bias`]).
pub fn rebuild_attention(
    q: &HostTensor,
    k: &HostTensor,
    lse: &[f32],
    layer: &LayerAttention,
    causal: bool,
    key_bias: Option<&[f32]>,
) -> HostTensor {
    match QkAttention::new(q, k, lse, *layer, causal) {
        Some(a) => match key_bias {
            Some(bias) => a.with_key_bias(bias).materialise(),
            None => a.materialise(),
        },
        None => HostTensor::new(vec![0, 0, 0], Vec::new()),
    }
}

/// Whether a layer masks later keys, read off its lse where the file does not say: in a
/// causal layer the first query sees only itself, so its lse is its own logit (plus any edit's
/// bias on key 0, `key_bias` [heads, T]) in every head.
pub fn looks_causal(
    q: &HostTensor,
    k: &HostTensor,
    lse: &[f32],
    layer: &LayerAttention,
    key_bias: Option<&[f32]>,
) -> bool {
    let [heads, t, d] = [q.shape[0], q.shape[1], q.shape[2]];
    if t < 2 {
        return false;
    }
    let group = heads / k.shape[0].max(1);
    (0..heads).all(|h| {
        let qi = &q.data[h * t * d..h * t * d + d];
        let kh = (h / group.max(1)) * t * d;
        let bias = key_bias.and_then(|b| b.get(h * t)).copied().unwrap_or(0.0);
        let own = layer.logit(qi.iter().zip(&k.data[kh..kh + d]).map(|(a, b)| a * b).sum()) + bias;
        (own - lse[h * t]).abs() <= 1e-4 * own.abs().max(1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], data: &[f32]) -> HostTensor {
        HostTensor::new(shape.to_vec(), data.to_vec())
    }

    /// Two heads sharing one key head, three tokens, d = 2, logits and lse by hand.
    fn case() -> (HostTensor, HostTensor) {
        let q = tensor(
            &[2, 3, 2],
            &[1.0, 0.0, 0.5, 1.0, 0.0, 2.0, -1.0, 1.0, 2.0, 0.0, 1.0, 1.0],
        );
        let k = tensor(&[1, 3, 2], &[1.0, 1.0, 0.0, 1.0, 2.0, -1.0]);
        (q, k)
    }

    fn lse_of(q: &HostTensor, k: &HostTensor, layer: &LayerAttention, causal: bool) -> Vec<f32> {
        let mut lse = Vec::new();
        for row in 0..6 {
            let i = row % 3;
            let qi = &q.data[row * 2..row * 2 + 2];
            let visible = (0..3).filter(|&j| !(causal && j > i) && layer.in_window(i, j));
            let logits: Vec<f32> = visible
                .map(|j| layer.logit(qi[0] * k.data[j * 2] + qi[1] * k.data[j * 2 + 1]))
                .collect();
            lse.push(logits.iter().map(|z| z.exp()).sum::<f32>().ln());
        }
        lse
    }

    #[test]
    fn rows_are_softmaxes_of_the_logits_with_the_mask_applied() {
        let (q, k) = case();
        let layer = LayerAttention::standard(2, false);
        for causal in [false, true] {
            let a = rebuild_attention(
                &q,
                &k,
                &lse_of(&q, &k, &layer, causal),
                &layer,
                causal,
                None,
            );
            for row in a.data.chunks(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
            // Query 0, head 0: k0 = (1, 1), k1 = (0, 1), k2 = (2, -1); q0 = (1, 0).
            let z = [1.0f32, 0.0, 2.0].map(|d| d / 2f32.sqrt());
            if causal {
                assert!(
                    (a.data[0] - 1.0).abs() < 1e-6,
                    "the first query sees only itself"
                );
                assert_eq!(&a.data[1..3], &[0.0, 0.0]);
            } else {
                let sum: f32 = z.iter().map(|v| v.exp()).sum();
                for (weight, logit) in a.data.iter().zip(z) {
                    assert!((weight - logit.exp() / sum).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn windows_and_soft_caps_are_applied_and_causality_is_read_off_the_lse() {
        let (q, k) = case();
        let layer = LayerAttention {
            softcap: Some(0.5),
            window: Some(2),
            ..LayerAttention::standard(2, false)
        };
        let lse = lse_of(&q, &k, &layer, true);
        let a = rebuild_attention(&q, &k, &lse, &layer, true, None);
        // Query 2 sees keys 1 and 2 only.
        assert_eq!(a.data[2 * 3], 0.0);
        assert!((a.data[2 * 3 + 1] + a.data[2 * 3 + 2] - 1.0).abs() < 1e-6);
        assert!(looks_causal(&q, &k, &lse, &layer, None));
        assert!(!looks_causal(
            &q,
            &k,
            &lse_of(&q, &k, &layer, false),
            &layer,
            None
        ));
    }

    /// A random causal layer with a window and a soft-cap: q, k and the lse that goes with them.
    fn random_layer(t: usize) -> (HostTensor, HostTensor, LayerAttention) {
        let mut seed = 12345u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        };
        let (heads, kv_heads, d) = (4, 2, 8);
        let q = HostTensor::new(
            vec![heads, t, d],
            (0..heads * t * d).map(|_| next()).collect(),
        );
        let k = HostTensor::new(
            vec![kv_heads, t, d],
            (0..kv_heads * t * d).map(|_| next()).collect(),
        );
        let layer = LayerAttention {
            softcap: Some(3.0),
            window: Some(7),
            ..LayerAttention::standard(d, true)
        };
        (q, k, layer)
    }

    fn lse_by_rows(q: &HostTensor, k: &HostTensor, layer: LayerAttention) -> Vec<f32> {
        let [heads, t, d] = [q.shape[0], q.shape[1], q.shape[2]];
        let group = heads / k.shape[0];
        (0..heads * t)
            .map(|row| {
                let (h, i) = (row / t, row % t);
                let qi = &q.data[row * d..][..d];
                let visible = (0..=i).filter(|&j| layer.in_window(i, j));
                let z: Vec<f64> = visible
                    .map(|j| {
                        let kj = &k.data[((h / group) * t + j) * d..][..d];
                        layer.logit(qi.iter().zip(kj).map(|(a, b)| a * b).sum()) as f64
                    })
                    .collect();
                let max = z.iter().cloned().fold(f64::MIN, f64::max);
                (max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln()) as f32
            })
            .collect()
    }

    #[test]
    fn a_regions_block_maxima_and_means_are_those_of_the_materialised_matrix() {
        let t = 37;
        let (q, k, layer) = random_layer(t);
        let lse = lse_by_rows(&q, &k, layer);
        let a = QkAttention::new(&q, &k, &lse, layer, true).unwrap();
        let full = a.materialise();
        let cell = |h: usize, i: usize, j: usize| full.data[(h * t + i) * t + j];
        // Rows 5..29 and columns 3..33 into 6 × 4 pixels: pixel (py, px) covers rows
        // 5 + [py·24/6, (py+1)·24/6) and columns 3 + [px·30/4, (px+1)·30/4).
        for reduce in [Reduce::Max, Reduce::Mean] {
            let pixels = a.region(3, 5..29, 3..33, [6, 4], reduce);
            for py in 0..6 {
                for px in 0..4 {
                    let rows = 5 + py * 24 / 6..5 + (py + 1) * 24 / 6;
                    let cols = 3 + px * 30 / 4..3 + (px + 1) * 30 / 4;
                    let cells: Vec<f32> = rows
                        .flat_map(|i| cols.clone().map(move |j| (i, j)))
                        .map(|(i, j)| cell(3, i, j))
                        .collect();
                    let want = match reduce {
                        Reduce::Max => cells.iter().cloned().fold(0.0, f32::max),
                        Reduce::Mean => cells.iter().sum::<f32>() / cells.len() as f32,
                    };
                    let got = pixels[py * 4 + px];
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{reduce:?} ({py}, {px}): {got} vs {want}"
                    );
                }
            }
        }
        // A grid as large as the region is the region's cells themselves.
        let exact = a.region(1, 0..t, 0..t, [t, t], Reduce::Max);
        assert_eq!(&exact[..], &full.data[t * t..2 * t * t]);
    }

    #[test]
    fn rows_from_q_k_and_lse_sum_to_one_within_the_window_and_causal_mask() {
        let t = 20;
        let (q, k, layer) = random_layer(t);
        let lse = lse_by_rows(&q, &k, layer);
        let a = QkAttention::new(&q, &k, &lse, layer, true).unwrap();
        let mut row = vec![0.0; t];
        for h in 0..4 {
            for i in 0..t {
                a.row(h, i, 0..t, &mut row);
                assert!(
                    (row.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                    "head {h} row {i}"
                );
                for (j, &v) in row.iter().enumerate() {
                    if j > i || i - j >= 7 {
                        assert_eq!(v, 0.0);
                    }
                }
            }
        }
        assert!(QkAttention::new(&q, &k, &lse[1..], layer, true).is_none());
    }
}
