//! Trustworthiness (Venna & Kaski, 2001), as scikit-learn's `sklearn.manifold.trustworthiness`
//! defines it: how far a layout keeps each point's k nearest neighbours from the original
//! space, 1 when every neighbour in the layout was also a neighbour before. It is how the tests
//! hold UMAP and t-SNE to keeping neighbourhoods.
//!
//! Exact and O(n²): meant for checking layouts of a few thousand points, not for the views.

fn ranks_by_distance(points: &[f32], n: usize, d: usize, i: usize) -> Vec<usize> {
    let x = &points[i * d..(i + 1) * d];
    let mut order: Vec<(f64, usize)> = (0..n)
        .filter(|&j| j != i)
        .map(|j| {
            let y = &points[j * d..(j + 1) * d];
            let s: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            (s, j)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, j)| j).collect()
}

/// `original` is [n, d], `layout` is [n, dims], both row-major.
pub fn trustworthiness(original: &[f32], d: usize, layout: &[f32], dims: usize, k: usize) -> f64 {
    let n = original.len() / d;
    assert!(k < n / 2, "trustworthiness needs k < n / 2");
    let mut penalty = 0.0f64;
    let mut rank_of = vec![0usize; n];
    for i in 0..n {
        for (rank, j) in ranks_by_distance(original, n, d, i).into_iter().enumerate() {
            rank_of[j] = rank + 1;
        }
        for j in ranks_by_distance(layout, n, dims, i).into_iter().take(k) {
            penalty += rank_of[j].saturating_sub(k) as f64;
        }
    }
    let (n, k) = (n as f64, k as f64);
    1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_equal_to_the_data_is_perfectly_trustworthy() {
        let points: Vec<f32> = (0..40).map(|i| ((i * 37) % 23) as f32).collect();
        assert_eq!(trustworthiness(&points, 2, &points, 2, 5), 1.0);
    }

    #[test]
    fn a_shuffled_layout_is_less_trustworthy() {
        let points: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let shuffled: Vec<f32> = (0..60).map(|i| ((i * 37) % 60) as f32).collect();
        assert!(trustworthiness(&points, 1, &shuffled, 1, 5) < 0.8);
    }
}
