//! Which keys each query of a forward pass may see, described rather than stored: packed inputs'
//! blocks, causality, padded keys and a sliding window. A [T, T] mask tensor is 4 GiB at 32k
//! tokens; this is O(T), and hands out the additive mask one row, or one tile, at a time.

use super::layers::MASKED;
use burn::tensor::{Device, Tensor, TensorData};
use std::ops::Range;

/// The mask of one layer in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMask {
    /// Each packed input's tokens in the pass, in order; a token sees keys of its own input only.
    blocks: Vec<Range<usize>>,
    causal: bool,
    key_valid: Option<Vec<bool>>,
    /// Key j is visible to query i only when |i − j| < window.
    window: Option<usize>,
}

impl KeyMask {
    pub fn new(
        lengths: &[usize],
        causal: bool,
        key_valid: Option<&[bool]>,
        window: Option<usize>,
    ) -> Self {
        let mut at = 0;
        let blocks = lengths
            .iter()
            .map(|&t| {
                at += t;
                at - t..at
            })
            .collect();
        Self {
            blocks,
            causal,
            key_valid: key_valid
                .filter(|valid| valid.iter().any(|&v| !v))
                .map(<[bool]>::to_vec),
            window,
        }
    }

    /// Nothing masked: one input, not causal, no padding, no window shorter than the input.
    pub fn is_open(&self) -> bool {
        let window_bites = self
            .window
            .is_some_and(|w| self.blocks.iter().any(|b| b.len() > w));
        self.blocks.len() <= 1 && !self.causal && !window_bites && self.key_valid.is_none()
    }

    /// Whether some keys are padding: a query's visible keys are then not one interval.
    pub fn has_padding(&self) -> bool {
        self.key_valid.is_some()
    }

    pub fn tokens(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.end)
    }

    fn block_of(&self, query: usize) -> Range<usize> {
        let i = self.blocks.partition_point(|b| b.end <= query);
        self.blocks.get(i).cloned().unwrap_or(0..0)
    }

    /// The keys `query` may see before padding is taken into account: one interval.
    pub fn visible(&self, query: usize) -> Range<usize> {
        let block = self.block_of(query);
        let mut lo = block.start;
        let mut hi = if self.causal { query + 1 } else { block.end };
        if let Some(w) = self.window {
            lo = lo.max((query + 1).saturating_sub(w));
            hi = hi.min(query + w);
        }
        lo..hi.max(lo)
    }

    /// The keys any query of `rows` may see: both ends of [`KeyMask::visible`] never decrease
    /// from one query to the next, so this is from the first row's start to the last row's end.
    pub fn key_range(&self, rows: Range<usize>) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        self.visible(rows.start).start..self.visible(rows.end - 1).end
    }

    /// Query `query`'s additive mask over `keys` into `out`: 0 where the key is visible, the most
    /// negative f32 where not, as a [T, T] mask tensor would hold it.
    pub fn fill_row(&self, query: usize, keys: Range<usize>, out: &mut [f32]) {
        let out = &mut out[..keys.len()];
        // The visible keys are one interval: three slice fills, which run at memory speed (a
        // causal row of 8k keys per head per layer adds up).
        let span = self.visible_within(query, keys.clone());
        out[..span.start].fill(MASKED);
        out[span.clone()].fill(0.0);
        out[span.end..].fill(MASKED);
        if let Some(valid) = &self.key_valid {
            for (o, &ok) in out.iter_mut().zip(&valid[keys]) {
                if !ok {
                    *o = MASKED;
                }
            }
        }
    }

    /// The keys of `keys` that `query` sees, as positions within `keys`, when they are one span
    /// (no padded keys); None when padding makes them several.
    pub fn span_within(&self, query: usize, keys: Range<usize>) -> Option<Range<usize>> {
        self.key_valid
            .is_none()
            .then(|| self.visible_within(query, keys))
    }

    /// [`KeyMask::visible`] cut to `keys`, as positions within `keys`; padding not applied.
    fn visible_within(&self, query: usize, keys: Range<usize>) -> Range<usize> {
        let visible = self.visible(query);
        let lo = visible.start.clamp(keys.start, keys.end) - keys.start;
        let hi = visible.end.clamp(keys.start, keys.end) - keys.start;
        lo..hi.max(lo)
    }

    /// Whether every key of `keys` is visible to every query of `rows`: no mask is needed there.
    pub fn tile_is_open(&self, rows: Range<usize>, keys: Range<usize>) -> bool {
        if rows.is_empty() || keys.is_empty() {
            return true;
        }
        let first = self.visible(rows.start);
        let last = self.visible(rows.end - 1);
        let open_for = |v: &Range<usize>| v.start <= keys.start && keys.end <= v.end;
        open_for(&first)
            && open_for(&last)
            && self
                .key_valid
                .as_ref()
                .is_none_or(|v| v[keys].iter().all(|&ok| ok))
    }

    /// The additive mask of a tile as a tensor, [rows, keys], for devices without the fused CPU
    /// kernel.
    pub fn tile_tensor(
        &self,
        rows: Range<usize>,
        keys: Range<usize>,
        device: &Device,
    ) -> Tensor<2> {
        let width = keys.len();
        let mut data = vec![0.0f32; rows.len() * width];
        for (query, out) in rows.clone().zip(data.chunks_mut(width.max(1))) {
            self.fill_row(query, keys.clone(), out);
        }
        Tensor::from_data(TensorData::new(data, vec![rows.len(), width]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_cells(mask: &KeyMask) -> Vec<bool> {
        let t = mask.tokens();
        let mut row = vec![0.0; t];
        (0..t)
            .flat_map(|q| {
                mask.fill_row(q, 0..t, &mut row);
                row.iter().map(|&v| v == 0.0).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn packed_inputs_see_only_their_own_block_causally() {
        let mask = KeyMask::new(&[2, 2], true, None, None);
        #[rustfmt::skip]
        let expected = [
            true, false, false, false,
            true, true, false, false,
            false, false, true, false,
            false, false, true, true,
        ];
        assert_eq!(open_cells(&mask), expected);
        assert!(!mask.is_open());
        assert!(KeyMask::new(&[3], false, None, None).is_open());
        assert!(KeyMask::new(&[3], false, None, Some(3)).is_open());
        assert!(KeyMask::new(&[3], false, Some(&[true, true, true]), None).is_open());
    }

    #[test]
    fn a_window_hides_keys_as_far_back_as_the_window_within_each_block_only() {
        let mask = KeyMask::new(&[4, 2], true, None, Some(2));
        #[rustfmt::skip]
        let expected = [
            true,  false, false, false, false, false,
            true,  true,  false, false, false, false,
            false, true,  true,  false, false, false,
            false, false, true,  true,  false, false,
            false, false, false, false, true,  false,
            false, false, false, false, true,  true,
        ];
        assert_eq!(open_cells(&mask), expected);
    }

    #[test]
    fn a_bidirectional_window_and_padding_hide_far_and_padded_keys() {
        let mask = KeyMask::new(&[4], false, Some(&[true, true, true, false]), Some(2));
        #[rustfmt::skip]
        let expected = [
            true,  true,  false, false,
            true,  true,  true,  false,
            false, true,  true,  false,
            false, false, true,  false,
        ];
        assert_eq!(open_cells(&mask), expected);
    }

    #[test]
    fn a_tiles_key_range_covers_every_visible_key_of_its_rows_and_no_more() {
        let mask = KeyMask::new(&[5, 6], true, None, Some(3));
        assert_eq!(mask.key_range(2..4), 0..4);
        assert_eq!(mask.key_range(5..9), 5..9);
        assert_eq!(mask.key_range(8..11), 6..11);
        for rows in [0..3, 3..7, 6..11] {
            let keys = mask.key_range(rows.clone());
            for q in rows {
                let v = mask.visible(q);
                assert!(keys.start <= v.start && v.end <= keys.end);
            }
        }
        assert!(mask.tile_is_open(9..10, 7..10));
        assert!(!mask.tile_is_open(8..10, 7..10));
    }
}
