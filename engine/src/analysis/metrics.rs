//! Per-head attention metrics, the colours of the head overview (Dodrio's and BertViz's model
//! view): each is a mean over the head's query rows, so heads of inputs of any length compare.

use crate::host::HostTensor;
use crate::rebuild::QkAttention;
use rayon::prelude::*;

/// One number per head that says what the head does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum HeadMetric {
    /// Shannon entropy of a row, in nats: low for a head that looks at one token.
    Entropy,
    /// Σ_j a_ij |i − j|, in tokens: how far a head looks.
    MeanDistance,
    /// a_i,i−1 (rows from the second on): the previous-token heads.
    PreviousToken,
    /// a_i,0: the attention-sink share.
    FirstToken,
    /// a_ii: how much a token attends to itself.
    SelfToken,
    /// Σ over special keys ([CLS], [SEP], BOS …) of a_ij.
    SpecialTokens,
}

impl HeadMetric {
    pub const ALL: [HeadMetric; 6] = [
        HeadMetric::Entropy,
        HeadMetric::MeanDistance,
        HeadMetric::PreviousToken,
        HeadMetric::FirstToken,
        HeadMetric::SelfToken,
        HeadMetric::SpecialTokens,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HeadMetric::Entropy => "entropy (nats)",
            HeadMetric::MeanDistance => "mean attention distance (tokens)",
            HeadMetric::PreviousToken => "previous-token share",
            HeadMetric::FirstToken => "first-token (sink) share",
            HeadMetric::SelfToken => "self share",
            HeadMetric::SpecialTokens => "share to special tokens",
        }
    }

    /// Shares live in [0, 1]; entropy and distance grow with the input's length.
    pub fn is_share(self) -> bool {
        !matches!(self, HeadMetric::Entropy | HeadMetric::MeanDistance)
    }
}

/// All metrics of one head, indexed like [`HeadMetric::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeadMetrics(pub [f32; 6]);

impl HeadMetrics {
    pub fn get(&self, metric: HeadMetric) -> f32 {
        self.0[HeadMetric::ALL
            .iter()
            .position(|m| *m == metric)
            .unwrap_or(0)]
    }
}

/// The metrics of one head from its attention matrix `attn` ([T, T], row-major) and which
/// tokens are special.
pub fn head_metrics(attn: &[f32], t: usize, special: &[bool]) -> HeadMetrics {
    let mut sums = MetricSums::default();
    for (i, row) in attn.chunks_exact(t.max(1)).take(t).enumerate() {
        sums.add_row(i, row, special);
    }
    sums.finish(t)
}

/// The metrics of one head accumulated a query row at a time, so that a head whose attention is
/// never materialised (computed row by row from q, k and lse) gets the same values.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricSums {
    entropy: f64,
    distance: f64,
    previous: f64,
    first: f64,
    own: f64,
    to_special: f64,
}

impl MetricSums {
    /// Adds query `i`'s row over every key.
    pub fn add_row(&mut self, i: usize, row: &[f32], special: &[bool]) {
        // Masked keys hold exact zeros and add nothing: only the span between the first and
        // the last non-zero weight is read (a causal row's first i + 1).
        let end = row.iter().rposition(|&a| a != 0.0).map_or(0, |e| e + 1);
        let start = row[..end].iter().position(|&a| a != 0.0).unwrap_or(end);
        for (j, &a) in row.iter().enumerate().take(end).skip(start) {
            let a = a as f64;
            if a > 0.0 {
                self.entropy -= a * a.ln();
            }
            self.distance += a * i.abs_diff(j) as f64;
            if special.get(j).copied().unwrap_or(false) {
                self.to_special += a;
            }
        }
        if i > 0 {
            self.previous += row.get(i - 1).copied().unwrap_or(0.0) as f64;
        }
        self.first += row.first().copied().unwrap_or(0.0) as f64;
        self.own += row.get(i).copied().unwrap_or(0.0) as f64;
    }

    /// The means over `t` rows.
    pub fn finish(&self, t: usize) -> HeadMetrics {
        if t == 0 {
            return HeadMetrics::default();
        }
        let n = t as f64;
        let previous_rows = (t - 1).max(1) as f64;
        HeadMetrics([
            (self.entropy / n) as f32,
            (self.distance / n) as f32,
            (self.previous / previous_rows) as f32,
            (self.first / n) as f32,
            (self.own / n) as f32,
            (self.to_special / n) as f32,
        ])
    }
}

/// Metrics of every head of one layer's attention [heads, T, T].
pub fn layer_metrics(attn: &HostTensor, special: &[bool]) -> Vec<HeadMetrics> {
    let [heads, t] = [attn.shape[0], attn.shape[1]];
    (0..heads)
        .map(|h| head_metrics(&attn.data[h * t * t..(h + 1) * t * t], t, special))
        .collect()
}

/// Metrics of every head of one layer whose attention is q, k and lse, a row at a time: the
/// values [`layer_metrics`] gives on the materialised matrix, in O(T) memory per head.
pub fn layer_metrics_from_qk(attention: &QkAttention, special: &[bool]) -> Vec<HeadMetrics> {
    layer_summaries_from_qk(attention, special, 0)
        .into_iter()
        .map(|(metrics, _)| metrics)
        .collect()
}

/// Each head's metrics and its thumbnail, in one pass over its rows computed from q, k and lse:
/// the thumbnail is `side` × `side` block maxima of the [T, T] matrix (see
/// [`max_pool_row`]), so every peak stays visible at any length. `side` 0: no thumbnail.
pub fn layer_summaries_from_qk(
    attention: &QkAttention,
    special: &[bool],
    side: usize,
) -> Vec<(HeadMetrics, Vec<f32>)> {
    let t = attention.tokens();
    (0..attention.heads())
        .into_par_iter()
        .map(|h| {
            let mut sums = MetricSums::default();
            let mut thumbnail = vec![0.0f32; side * side];
            attention.for_each_row(h, 0..t, 0..t, |i, row| {
                sums.add_row(i, row, special);
                if side > 0 {
                    let r = i * side / t;
                    max_pool_row(row, &mut thumbnail[r * side..(r + 1) * side]);
                }
            });
            (sums.finish(t), thumbnail)
        })
        .collect()
}

/// Folds one row of a [T, T] matrix into its row of a max-pooled copy: value j goes to pixel
/// j · side / T, which keeps the largest.
pub fn max_pool_row(row: &[f32], pixels: &mut [f32]) {
    let (t, side) = (row.len(), pixels.len());
    if t == 0 || side == 0 {
        return;
    }
    for (p, pixel) in pixels.iter_mut().enumerate() {
        // The columns j with j · side / t == p.
        let start = (p * t).div_ceil(side);
        let end = ((p + 1) * t).div_ceil(side).min(t);
        *pixel = row[start.min(end)..end]
            .iter()
            .fold(*pixel, |m, &v| m.max(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_token_head_scores_one_on_previous_token_and_zero_entropy() {
        // Row 0 attends to itself, every other row to the token before it.
        let t = 4;
        let mut attn = vec![0.0; t * t];
        attn[0] = 1.0;
        for i in 1..t {
            attn[i * t + i - 1] = 1.0;
        }
        let m = head_metrics(&attn, t, &[true, false, false, false]);
        assert_eq!(m.get(HeadMetric::PreviousToken), 1.0);
        assert_eq!(m.get(HeadMetric::Entropy), 0.0);
        assert_eq!(m.get(HeadMetric::MeanDistance), 0.75);
        assert_eq!(m.get(HeadMetric::SelfToken), 0.25);
        assert_eq!(m.get(HeadMetric::FirstToken), 0.5);
        assert_eq!(m.get(HeadMetric::SpecialTokens), 0.5);
    }

    #[test]
    fn a_uniform_head_has_entropy_ln_t() {
        let t = 8;
        let attn = vec![1.0 / t as f32; t * t];
        let m = head_metrics(&attn, t, &[false; 8]);
        assert!((m.get(HeadMetric::Entropy) - (t as f32).ln()).abs() < 1e-5);
        assert!((m.get(HeadMetric::FirstToken) - 0.125).abs() < 1e-6);
    }

    #[test]
    fn metrics_and_thumbnails_from_q_k_and_lse_equal_those_of_the_materialised_matrix() {
        let (heads, t, d) = (2, 23, 4);
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 3.0 - 1.5
        };
        let q = HostTensor::new(
            vec![heads, t, d],
            (0..heads * t * d).map(|_| next()).collect(),
        );
        let k = HostTensor::new(
            vec![heads, t, d],
            (0..heads * t * d).map(|_| next()).collect(),
        );
        let layer = crate::attention::LayerAttention::standard(d, false);
        // The lse of each causal row, by hand.
        let lse: Vec<f32> = (0..heads * t)
            .map(|row| {
                let (h, i) = (row / t, row % t);
                (0..=i)
                    .map(|j| {
                        let dot: f32 = (0..d)
                            .map(|x| q.data[row * d + x] * k.data[(h * t + j) * d + x])
                            .sum();
                        (layer.logit(dot) as f64).exp()
                    })
                    .sum::<f64>()
                    .ln() as f32
            })
            .collect();
        let a = QkAttention::new(&q, &k, &lse, layer, true).unwrap();
        let full = a.materialise();
        let special: Vec<bool> = (0..t).map(|i| i == 0 || i == 5).collect();
        let want = layer_metrics(&full, &special);
        let side = 5;
        let got = layer_summaries_from_qk(&a, &special, side);
        for h in 0..heads {
            for (x, y) in want[h].0.iter().zip(got[h].0.0) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "head {h}: {:?} vs {:?}",
                    want[h],
                    got[h].0
                );
            }
            let head = &full.data[h * t * t..(h + 1) * t * t];
            let mut pooled = vec![0.0f32; side * side];
            for i in 0..t {
                for j in 0..t {
                    let p = &mut pooled[(i * side / t) * side + j * side / t];
                    *p = p.max(head[i * t + j]);
                }
            }
            assert_eq!(got[h].1, pooled);
        }
    }
}
