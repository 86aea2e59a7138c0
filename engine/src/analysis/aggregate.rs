//! Attention aggregated over heads: the mean or max over one layer's heads, or over every head
//! of every layer, as one [T, T] matrix that the head view draws like a single head.

use crate::host::HostTensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reduce {
    Mean,
    Max,
}

/// Reduces [heads, T, T] tensors (one per layer) over all their heads into one [T, T].
pub fn reduce_heads<'a>(
    layers: impl IntoIterator<Item = &'a HostTensor>,
    reduce: Reduce,
) -> HostTensor {
    let mut out: Option<Vec<f32>> = None;
    let mut count = 0usize;
    let mut t = 0;
    for attn in layers {
        t = attn.shape[1];
        let size = t * t;
        let acc = out.get_or_insert_with(|| match reduce {
            Reduce::Mean => vec![0.0; size],
            Reduce::Max => vec![f32::NEG_INFINITY; size],
        });
        for head in attn.data.chunks_exact(size) {
            count += 1;
            for (a, &v) in acc.iter_mut().zip(head) {
                match reduce {
                    Reduce::Mean => *a += v,
                    Reduce::Max => *a = a.max(v),
                }
            }
        }
    }
    let mut data = out.unwrap_or_default();
    if reduce == Reduce::Mean && count > 0 {
        let scale = 1.0 / count as f32;
        data.iter_mut().for_each(|v| *v *= scale);
    }
    HostTensor::new(vec![t, t], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_max_run_over_every_head_of_every_given_layer() {
        let l0 = HostTensor::new(vec![2, 1, 1], vec![0.2, 0.4]);
        let l1 = HostTensor::new(vec![2, 1, 1], vec![0.6, 0.0]);
        let mean = reduce_heads([&l0, &l1], Reduce::Mean);
        assert!((mean.data[0] - 0.3).abs() < 1e-6);
        assert_eq!(reduce_heads([&l0, &l1], Reduce::Max).data[..], [0.6]);
        assert_eq!(reduce_heads([&l0], Reduce::Max).shape, vec![1, 1]);
    }
}
