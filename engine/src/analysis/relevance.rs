//! Relevance maps by Chefer et al.'s rule for self-attention ("Generic Attention-model
//! Explainability", 2021): R = I, then for each layer in order R ← R + Ā·R with
//! Ā = the mean over heads of ReLU(∂target/∂A ⊙ A). A token's relevance to the target is the
//! target row of R: the last token for a next-token target, the pooled token otherwise.

/// Row `row` of Chefer et al.'s relevance matrix from each layer's ∂target/∂A ⊙ A
/// ([heads × T × T] row-major, layers in order). Only that row is carried, from the last layer
/// down: eᵀ·(I + Ā_{L−1})···(I + Ā_0) is the same product as the whole R's row, in O(T) memory
/// besides the layers. Sums run in f64.
pub fn chefer_relevance(
    grad_attn: &[Vec<f32>],
    heads: usize,
    tokens: usize,
    row: usize,
) -> Vec<f32> {
    let mut carried = RelevanceRow::new(tokens, row);
    for layer in grad_attn.iter().rev() {
        carried.add_layer(layer, heads);
    }
    carried.finish()
}

/// Chefer et al.'s relevance row, fed one layer at a time from the last down (the order a
/// layer-by-layer backward pass produces them in).
#[derive(Debug, Clone)]
pub struct RelevanceRow {
    relevance: Vec<f64>,
    added: Vec<f64>,
    tokens: usize,
}

impl RelevanceRow {
    /// eᵀ of token `row`: each token relevant only to itself (empty when `row` is past the end).
    pub fn new(tokens: usize, row: usize) -> Self {
        let mut relevance = vec![0.0f64; if row < tokens { tokens } else { 0 }];
        if let Some(r) = relevance.get_mut(row) {
            *r = 1.0;
        }
        Self {
            added: vec![0.0; relevance.len()],
            tokens: relevance.len(),
            relevance,
        }
    }

    /// v ← v + v·Ā for one layer's ∂target/∂A ⊙ A [heads × T × T]; a layer of another size is
    /// skipped.
    pub fn add_layer(&mut self, layer: &[f32], heads: usize) {
        let t = self.tokens;
        if heads == 0 || t == 0 || layer.len() != heads * t * t {
            return;
        }
        self.added.iter_mut().for_each(|a| *a = 0.0);
        for head in layer.chunks_exact(t * t) {
            for (i, query) in head.chunks_exact(t).enumerate() {
                let weight = self.relevance[i];
                if weight == 0.0 {
                    continue;
                }
                for (a, &g) in self.added.iter_mut().zip(query) {
                    *a += weight * f64::from(g.max(0.0));
                }
            }
        }
        for (r, a) in self.relevance.iter_mut().zip(&self.added) {
            *r += a / heads as f64;
        }
    }

    pub fn finish(self) -> Vec<f32> {
        self.relevance.into_iter().map(|r| r as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole matrix, as the rule is written.
    fn full_rule(grad_attn: &[Vec<f32>], heads: usize, t: usize) -> Vec<Vec<f64>> {
        let mut r: Vec<Vec<f64>> = (0..t)
            .map(|i| (0..t).map(|j| f64::from(u8::from(i == j))).collect())
            .collect();
        for layer in grad_attn {
            let mean: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    (0..t)
                        .map(|j| {
                            (0..heads)
                                .map(|h| f64::from(layer[(h * t + i) * t + j].max(0.0)))
                                .sum::<f64>()
                                / heads as f64
                        })
                        .collect()
                })
                .collect();
            let product: Vec<Vec<f64>> = (0..t)
                .map(|i| {
                    (0..t)
                        .map(|j| (0..t).map(|k| mean[i][k] * r[k][j]).sum())
                        .collect()
                })
                .collect();
            for i in 0..t {
                for j in 0..t {
                    r[i][j] += product[i][j];
                }
            }
        }
        r
    }

    #[test]
    fn the_carried_row_equals_the_row_of_the_whole_matrix() {
        let (heads, t) = (2, 4);
        let layers: Vec<Vec<f32>> = (0..3)
            .map(|l| {
                (0..heads * t * t)
                    .map(|i| ((i * 7 + l * 3) % 11) as f32 / 5.0 - 0.8)
                    .collect()
            })
            .collect();
        let whole = full_rule(&layers, heads, t);
        for row in [0, t - 1] {
            let carried = chefer_relevance(&layers, heads, t, row);
            for (a, b) in carried.iter().zip(&whole[row]) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-6 * b.abs().max(1.0),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn without_positive_gradients_each_token_is_relevant_only_to_itself() {
        let layers = vec![vec![-1.0f32; 9]];
        assert_eq!(chefer_relevance(&layers, 1, 3, 2), vec![0.0, 0.0, 1.0]);
    }
}
