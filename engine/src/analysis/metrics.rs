//! Per-head attention metrics, the colours of the head overview (Dodrio's and BertViz's model
//! view): each is a mean over the head's query rows, so heads of inputs of any length compare.

use crate::host::HostTensor;

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
    if t == 0 {
        return HeadMetrics::default();
    }
    let (mut entropy, mut distance, mut previous, mut first, mut own, mut to_special) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..t {
        let row = &attn[i * t..(i + 1) * t];
        for (j, &a) in row.iter().enumerate() {
            let a = a as f64;
            if a > 0.0 {
                entropy -= a * a.ln();
            }
            distance += a * i.abs_diff(j) as f64;
            if special.get(j).copied().unwrap_or(false) {
                to_special += a;
            }
        }
        if i > 0 {
            previous += row[i - 1] as f64;
        }
        first += row[0] as f64;
        own += row[i] as f64;
    }
    let n = t as f64;
    let previous_rows = (t - 1).max(1) as f64;
    HeadMetrics([
        (entropy / n) as f32,
        (distance / n) as f32,
        (previous / previous_rows) as f32,
        (first / n) as f32,
        (own / n) as f32,
        (to_special / n) as f32,
    ])
}

/// Metrics of every head of one layer's attention [heads, T, T].
pub fn layer_metrics(attn: &HostTensor, special: &[bool]) -> Vec<HeadMetrics> {
    let [heads, t] = [attn.shape[0], attn.shape[1]];
    (0..heads)
        .map(|h| head_metrics(&attn.data[h * t * t..(h + 1) * t * t], t, special))
        .collect()
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
}
