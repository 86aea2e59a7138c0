//! Per-head attention metrics, the colours of the head overview (Dodrio's and BertViz's model
//! view): each is a mean over the head's query rows, so heads of inputs of any length compare.

use super::row_sums::row_sums;
use crate::host::HostTensor;
use crate::model::key_mask::KeyMask;
use crate::rebuild::QkAttention;
use rayon::prelude::*;
use std::ops::Range;

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
    /// max over keys j ≥ 1 of the mean attention j receives, (1/T) Σ_i a_ij: a sink past the
    /// first token ("hidden" or secondary sinks).
    SecondarySink,
    /// Mean over rows of max(0, 1 − Σ_j a_ij‖v_j‖ / mean_j‖v_j‖) over the keys the row sees:
    /// near 1 when the head's attention lands on tokens whose values are near zero, so it moves
    /// almost nothing (a dormant head); NaN without value norms.
    Dormancy,
    /// Mean over rows i ≥ 68 of the attention within the first 4 tokens and the 64 keys
    /// nearest the query: DuoAttention's streaming heads score near 1; NaN for shorter inputs.
    Streaming,
    /// The needle probe's copy-paste score (`headwise probe retrieval`): the share of answer
    /// tokens whose strongest attention lands on the same token inside the needle; NaN where
    /// the input is not a probe.
    Retrieval,
    /// |∂target/∂ξ_h| (Michel et al.) from a gradient run, stored with the session; NaN
    /// without gradients.
    Importance,
}

/// The attention a head must put on a token, on average over queries, for the token to count as
/// a sink in it: ε = 0.3 as in "When Attention Sink Emerges".
pub const SINK_EPSILON: f32 = 0.3;
/// The streaming score's sink tokens and recent window (DuoAttention's pattern).
pub const STREAMING_SINK_TOKENS: usize = 4;
pub const STREAMING_RECENT_TOKENS: usize = 64;

impl HeadMetric {
    pub const ALL: [HeadMetric; 11] = [
        HeadMetric::Entropy,
        HeadMetric::MeanDistance,
        HeadMetric::PreviousToken,
        HeadMetric::FirstToken,
        HeadMetric::SelfToken,
        HeadMetric::SpecialTokens,
        HeadMetric::SecondarySink,
        HeadMetric::Dormancy,
        HeadMetric::Streaming,
        HeadMetric::Retrieval,
        HeadMetric::Importance,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HeadMetric::Entropy => "entropy (nats)",
            HeadMetric::MeanDistance => "mean attention distance (tokens)",
            HeadMetric::PreviousToken => "previous-token share",
            HeadMetric::FirstToken => "first-token (sink) share",
            HeadMetric::SelfToken => "self share",
            HeadMetric::SpecialTokens => "share to special tokens",
            HeadMetric::SecondarySink => "secondary sink (most attention to a later token)",
            HeadMetric::Dormancy => "dormancy (value-weighted)",
            HeadMetric::Streaming => "streaming share (4 sink + 64 recent)",
            HeadMetric::Retrieval => "retrieval score (needle probe)",
            HeadMetric::Importance => "importance |∂target/∂ξ| (gradients)",
        }
    }

    /// One line that defines the metric, for the legend and the README.
    pub fn definition(self) -> &'static str {
        match self {
            HeadMetric::Entropy => "mean over queries of −Σ_j a_ij ln a_ij",
            HeadMetric::MeanDistance => "mean over queries of Σ_j a_ij |i − j|",
            HeadMetric::PreviousToken => "mean over queries i ≥ 1 of a_i,i−1",
            HeadMetric::FirstToken => {
                "mean over queries of a_i0; a head is a sink head when it exceeds ε = 0.3"
            }
            HeadMetric::SelfToken => "mean over queries of a_ii",
            HeadMetric::SpecialTokens => "mean over queries of the attention to special tokens",
            HeadMetric::SecondarySink => {
                "max over keys j ≥ 1 of (1/T) Σ_i a_ij; above ε = 0.3, token j is a secondary sink"
            }
            HeadMetric::Dormancy => {
                "mean over queries of max(0, 1 − Σ_j a_ij|v_j| / mean_j |v_j|): 1 when the head's \
                 attention goes to near-zero values"
            }
            HeadMetric::Streaming => {
                "mean over queries i ≥ 68 of the attention to the first 4 tokens and the 64 \
                 nearest keys"
            }
            HeadMetric::Retrieval => {
                "share of answer tokens whose strongest attention is the same token in the needle"
            }
            HeadMetric::Importance => {
                "|∂target/∂ξ_h| with a gate ξ_h = 1 on the head's output (Michel et al.); the \
                 target is the session's (a next token's log-probability, a class, or the pooled \
                 output · a token's embedding)"
            }
        }
    }

    /// Shares live in [0, 1]; entropy and distance grow with the input's length.
    pub fn is_share(self) -> bool {
        !matches!(
            self,
            HeadMetric::Entropy | HeadMetric::MeanDistance | HeadMetric::Importance
        )
    }
}

/// All metrics of one head, indexed like [`HeadMetric::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeadMetrics(pub [f32; 11]);

impl HeadMetrics {
    pub fn get(&self, metric: HeadMetric) -> f32 {
        self.0[HeadMetric::ALL
            .iter()
            .position(|m| *m == metric)
            .unwrap_or(0)]
    }

    pub fn set(&mut self, metric: HeadMetric, value: f32) {
        if let Some(at) = HeadMetric::ALL.iter().position(|m| *m == metric) {
            self.0[at] = value;
        }
    }
}

/// What a layer's metrics need beside its attention: which tokens are special, and the value
/// norms `vnorm` [kv_heads, T] where the session has them.
#[derive(Debug, Clone, Copy)]
pub struct LayerContext<'a> {
    pub special: &'a [bool],
    pub value_norms: Option<&'a [f32]>,
    pub kv_heads: usize,
    /// Which keys each query sees, where known (materialised attention; rows computed from
    /// q, k and lse carry their own).
    pub mask: Option<&'a KeyMask>,
}

impl<'a> LayerContext<'a> {
    /// Special tokens only, no value norms.
    pub fn plain(special: &'a [bool]) -> Self {
        Self {
            special,
            value_norms: None,
            kv_heads: 1,
            mask: None,
        }
    }

    /// Head `h`'s value norms [T] (its key head's), of `heads` heads over `t` tokens.
    fn head_values(&self, h: usize, heads: usize, t: usize) -> Option<&'a [f32]> {
        let norms = self.value_norms?;
        let kv = self.kv_heads.max(1);
        let group = (heads / kv).max(1);
        norms.get((h / group) * t..(h / group + 1) * t)
    }
}

/// The metrics of one head from its attention matrix `attn` ([T, T], row-major), its value
/// norms [T] if known, which tokens are special, and which keys each query sees (if known; else
/// the span of its non-zero weights).
pub fn head_metrics(
    attn: &[f32],
    t: usize,
    special: &[bool],
    value_norms: Option<&[f32]>,
    mask: Option<&KeyMask>,
) -> HeadMetrics {
    let mut sums = MetricSums::new(t, value_norms);
    for (i, row) in attn.chunks_exact(t.max(1)).take(t).enumerate() {
        sums.add_row(i, row, special, mask.map(|m| m.visible(i)));
    }
    sums.finish(t)
}

/// The metrics of one head accumulated a query row at a time, so that a head whose attention is
/// never materialised (computed row by row from q, k and lse) gets the same values.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    entropy: f64,
    distance: f64,
    previous: f64,
    first: f64,
    own: f64,
    to_special: f64,
    /// Σ_i a_ij for every key j.
    received: Vec<f64>,
    /// Prefix sums of the value norms (T + 1), when known.
    value_prefix: Option<Vec<f64>>,
    value_norms: Vec<f32>,
    dormancy: f64,
    streaming: f64,
    streaming_rows: usize,
}

impl MetricSums {
    pub fn new(t: usize, value_norms: Option<&[f32]>) -> Self {
        let value_prefix = value_norms.filter(|n| n.len() == t).map(|n| {
            std::iter::once(0.0)
                .chain(n.iter().scan(0.0f64, |acc, &v| {
                    *acc += v as f64;
                    Some(*acc)
                }))
                .collect()
        });
        Self {
            received: vec![0.0; t],
            value_norms: value_norms
                .filter(|n| n.len() == t)
                .map_or(Vec::new(), <[f32]>::to_vec),
            value_prefix,
            ..Default::default()
        }
    }

    /// Adds query `i`'s row over every key; `visible` is the keys the query sees (dormancy
    /// compares with their mean value norm), else the span of its non-zero weights.
    pub fn add_row(
        &mut self,
        i: usize,
        row: &[f32],
        special: &[bool],
        visible: Option<Range<usize>>,
    ) {
        // Masked keys hold exact zeros and add nothing: only the span between the first and
        // the last non-zero weight is read (a causal row's first i + 1).
        let end = row.iter().rposition(|&a| a != 0.0).map_or(0, |e| e + 1);
        let start = row[..end].iter().position(|&a| a != 0.0).unwrap_or(end);
        let seen = visible
            .map(|v| v.start.min(row.len())..v.end.min(row.len()))
            .unwrap_or(start..end);
        let sums = row_sums(
            i,
            row,
            start..end,
            special,
            &self.value_norms,
            &mut self.received,
        );
        self.entropy += sums.entropy;
        self.distance += sums.distance;
        self.to_special += sums.to_special;
        let (moved, streaming) = (sums.moved, sums.streaming);
        if i > 0 {
            self.previous += row.get(i - 1).copied().unwrap_or(0.0) as f64;
        }
        self.first += row.first().copied().unwrap_or(0.0) as f64;
        self.own += row.get(i).copied().unwrap_or(0.0) as f64;
        if let Some(prefix) = &self.value_prefix
            && !seen.is_empty()
        {
            let mean = (prefix[seen.end] - prefix[seen.start]) / seen.len() as f64;
            if mean > 0.0 {
                self.dormancy += (1.0 - moved / mean).max(0.0);
            }
        }
        if i >= STREAMING_SINK_TOKENS + STREAMING_RECENT_TOKENS {
            self.streaming += streaming;
            self.streaming_rows += 1;
        }
    }

    /// The means over `t` rows.
    pub fn finish(&self, t: usize) -> HeadMetrics {
        if t == 0 {
            return HeadMetrics::default();
        }
        let n = t as f64;
        let previous_rows = (t - 1).max(1) as f64;
        let secondary = self
            .received
            .iter()
            .skip(1)
            .fold(0.0f64, |m, &r| m.max(r / n));
        let dormancy = if self.value_prefix.is_some() {
            (self.dormancy / n) as f32
        } else {
            f32::NAN
        };
        let streaming = if self.streaming_rows > 0 {
            (self.streaming / self.streaming_rows as f64) as f32
        } else {
            f32::NAN
        };
        HeadMetrics([
            (self.entropy / n) as f32,
            (self.distance / n) as f32,
            (self.previous / previous_rows) as f32,
            (self.first / n) as f32,
            (self.own / n) as f32,
            (self.to_special / n) as f32,
            secondary as f32,
            dormancy,
            streaming,
            // Retrieval and importance come from elsewhere (a probe's layout, a gradient run).
            f32::NAN,
            f32::NAN,
        ])
    }

    /// The mean attention each key receives over all `t` queries, (1/T) Σ_i a_ij.
    pub fn received(&self, t: usize) -> Vec<f32> {
        self.received
            .iter()
            .map(|&r| (r / t.max(1) as f64) as f32)
            .collect()
    }
}

/// The sink rate of one input: the share of heads, over every layer, whose mean attention to
/// the first token exceeds [`SINK_EPSILON`] ("When Attention Sink Emerges"); `metrics` is
/// `[layer][head]`.
pub fn sink_rate(metrics: &[Vec<HeadMetrics>]) -> f32 {
    let heads: Vec<f32> = metrics
        .iter()
        .flatten()
        .map(|m| m.get(HeadMetric::FirstToken))
        .collect();
    if heads.is_empty() {
        return 0.0;
    }
    heads.iter().filter(|&&a| a > SINK_EPSILON).count() as f32 / heads.len() as f32
}

/// What one pass over a head's rows gives: its metrics, its overview thumbnail (empty unless
/// asked for) and the mean attention each key receives, (1/T) Σ_i a_ij.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSummary {
    pub metrics: HeadMetrics,
    pub thumbnail: Vec<f32>,
    pub received: Vec<f32>,
}

/// Metrics of every head of one layer's attention [heads, T, T].
pub fn layer_metrics(attn: &HostTensor, context: &LayerContext) -> Vec<HeadMetrics> {
    layer_summaries(attn, context)
        .into_iter()
        .map(|s| s.metrics)
        .collect()
}

/// The summary of every head of one layer's attention [heads, T, T], without thumbnails.
pub fn layer_summaries(attn: &HostTensor, context: &LayerContext) -> Vec<HeadSummary> {
    let [heads, t] = [attn.shape[0], attn.shape[1]];
    (0..heads)
        .map(|h| {
            let mut sums = MetricSums::new(t, context.head_values(h, heads, t));
            let head = &attn.data[h * t * t..(h + 1) * t * t];
            for (i, row) in head.chunks_exact(t.max(1)).take(t).enumerate() {
                sums.add_row(i, row, context.special, context.mask.map(|m| m.visible(i)));
            }
            HeadSummary {
                metrics: sums.finish(t),
                thumbnail: Vec::new(),
                received: sums.received(t),
            }
        })
        .collect()
}

/// Metrics of every head of one layer whose attention is q, k and lse, a row at a time: the
/// values [`layer_metrics`] gives on the materialised matrix, in O(T) memory per head.
pub fn layer_metrics_from_qk(attention: &QkAttention, context: &LayerContext) -> Vec<HeadMetrics> {
    layer_summaries_from_qk(attention, context, 0)
        .into_iter()
        .map(|s| s.metrics)
        .collect()
}

/// Each head's summary in one pass over its rows computed from q, k and lse: the thumbnail is
/// `side` × `side` block maxima of the [T, T] matrix (see [`max_pool_row`]), so every peak
/// stays visible at any length. `side` 0: no thumbnail.
pub fn layer_summaries_from_qk(
    attention: &QkAttention,
    context: &LayerContext,
    side: usize,
) -> Vec<HeadSummary> {
    let t = attention.tokens();
    let heads = attention.heads();
    let special = context.special;
    (0..heads)
        .into_par_iter()
        .map(|h| {
            let mut sums = MetricSums::new(t, context.head_values(h, heads, t));
            let mut thumbnail = vec![0.0f32; side * side];
            attention.for_each_row(h, 0..t, 0..t, |i, row| {
                sums.add_row(i, row, special, Some(attention.visible(i)));
                if side > 0 {
                    let r = i * side / t;
                    max_pool_row(row, &mut thumbnail[r * side..(r + 1) * side]);
                }
            });
            HeadSummary {
                metrics: sums.finish(t),
                thumbnail,
                received: sums.received(t),
            }
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
        let m = head_metrics(&attn, t, &[true, false, false, false], None, None);
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
        let m = head_metrics(&attn, t, &[false; 8], None, None);
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
        let norms: Vec<f32> = (0..heads * t).map(|x| 0.5 + (x % 7) as f32).collect();
        let mask = KeyMask::new(&[t], true, None, None);
        let context = LayerContext {
            special: &special,
            value_norms: Some(&norms),
            kv_heads: heads,
            mask: Some(&mask),
        };
        let want = layer_metrics(&full, &context);
        let side = 5;
        let got = layer_summaries_from_qk(&a, &context, side);
        let whole = layer_summaries(&full, &context);
        for h in 0..heads {
            for (x, y) in whole[h].received.iter().zip(&got[h].received) {
                assert!((x - y).abs() < 1e-5, "received: {x} vs {y}");
            }
            for (x, y) in want[h].0.iter().zip(got[h].metrics.0) {
                assert!(
                    (x - y).abs() < 1e-5 || (x.is_nan() && y.is_nan()),
                    "head {h}: {:?} vs {:?}",
                    want[h],
                    got[h].metrics
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
            assert_eq!(got[h].thumbnail, pooled);
        }
    }

    #[test]
    fn a_head_that_collapses_on_a_sink_with_a_tiny_value_is_dormant_and_a_uniform_one_is_not() {
        let t = 4;
        // Every row on token 0, whose value is a tenth of the others'.
        let mut sink = vec![0.0; t * t];
        for i in 0..t {
            sink[i * t] = 1.0;
        }
        let norms = [0.1, 1.0, 1.0, 1.0];
        let open = KeyMask::new(&[t], false, None, None);
        let m = head_metrics(&sink, t, &[false; 4], Some(&norms), Some(&open));
        // Row i sees keys 0..=3 (no mask here): mean norm 0.775, moved 0.1.
        let want = 1.0 - 0.1 / 0.775;
        assert!((m.get(HeadMetric::Dormancy) - want).abs() < 1e-5);
        assert_eq!(m.get(HeadMetric::FirstToken), 1.0);
        let uniform = vec![0.25; t * t];
        let u = head_metrics(&uniform, t, &[false; 4], Some(&[1.0; 4]), Some(&open));
        assert!(u.get(HeadMetric::Dormancy).abs() < 1e-6);
        assert!(
            head_metrics(&uniform, t, &[false; 4], None, None)
                .get(HeadMetric::Dormancy)
                .is_nan()
        );
    }

    #[test]
    fn a_later_token_that_every_query_attends_is_a_secondary_sink() {
        let t = 5;
        let mut attn = vec![0.0; t * t];
        for i in 0..t {
            attn[i * t] = 0.4;
            attn[i * t + 2] = 0.6;
        }
        let m = head_metrics(&attn, t, &[false; 5], None, None);
        assert!((m.get(HeadMetric::SecondarySink) - 0.6).abs() < 1e-6);
        assert!(m.get(HeadMetric::SecondarySink) > SINK_EPSILON);
    }

    #[test]
    fn streaming_counts_sink_tokens_and_the_recent_window_on_long_rows_only() {
        let t = 200;
        // Each row: half on token 0 (a sink), half on token i / 2 (far back from row 130 on).
        let mut attn = vec![0.0f32; t * t];
        for i in 0..t {
            attn[i * t] += 0.5;
            attn[i * t + i / 2] += 0.5;
        }
        let m = head_metrics(&attn, t, &vec![false; t], None, None);
        // Rows 68..200: i / 2 is within 64 of i while i < 128 (or is the sink, i < 8).
        let rows = (68..t).count() as f32;
        let within = (68..t).filter(|i| i - i / 2 < 64).count() as f32;
        let want = (0.5 * rows + 0.5 * within) / rows;
        assert!((m.get(HeadMetric::Streaming) - want).abs() < 1e-5);
        let short = head_metrics(&[0.25; 16], 4, &[false; 4], None, None);
        assert!(short.get(HeadMetric::Streaming).is_nan());
    }

    #[test]
    fn the_sink_rate_is_the_share_of_heads_above_epsilon_on_the_first_token() {
        let with_first = |a: f32| {
            let mut m = HeadMetrics::default();
            m.set(HeadMetric::FirstToken, a);
            m
        };
        let layers = vec![
            vec![with_first(0.9), with_first(0.1)],
            vec![with_first(0.31), with_first(0.3)],
        ];
        assert_eq!(sink_rate(&layers), 0.5);
    }
}
