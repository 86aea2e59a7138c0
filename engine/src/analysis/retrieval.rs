//! Retrieval heads (Wu et al., "Retrieval Head Mechanistically Explains Long-Context
//! Factuality"): the copy-paste score of each head on a needle-in-a-haystack input whose answer
//! is teacher-forced. At each answer token, the query just before it is the one that predicts
//! it; a head scores a hit when that query's strongest attention lands inside the needle on the
//! very token being predicted. The score is the share of answer tokens that hit.

use crate::session::Session;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Where the needle and the teacher-forced answer lie in a probe input, in tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeLayout {
    /// The needle's tokens that the answer copies: [start, end).
    pub needle: [usize; 2],
    /// The answer's tokens: [start, end).
    pub answer: [usize; 2],
}

impl ProbeLayout {
    pub fn needle(&self) -> Range<usize> {
        self.needle[0]..self.needle[1]
    }

    pub fn answer(&self) -> Range<usize> {
        self.answer[0]..self.answer[1]
    }

    /// Finds the layout in `ids`, whose last `answer_len` tokens are the answer: the needle is
    /// the last earlier occurrence of the same tokens. None when the answer tokenises
    /// differently inside the haystack (or is empty).
    pub fn find(ids: &[u32], answer_len: usize) -> Option<Self> {
        let t = ids.len();
        if answer_len == 0 || answer_len >= t {
            return None;
        }
        let answer = t - answer_len..t;
        let wanted = &ids[answer.clone()];
        let start = (0..answer.start - answer_len + 1)
            .rev()
            .find(|&s| &ids[s..s + answer_len] == wanted)?;
        Some(Self {
            needle: [start, start + answer_len],
            answer: [answer.start, answer.end],
        })
    }
}

/// The copy-paste score of one head from the rows it needs: `row(i)` is query i's attention
/// over every key. Answer tokens at position 0 cannot be predicted and do not count.
pub fn copy_paste_score(
    ids: &[u32],
    layout: &ProbeLayout,
    mut row: impl FnMut(usize) -> Option<Vec<f32>>,
) -> f32 {
    let needle = layout.needle();
    let mut hits = 0usize;
    let mut counted = 0usize;
    for p in layout.answer().filter(|&p| p > 0) {
        counted += 1;
        let Some(weights) = row(p - 1) else { continue };
        let strongest = weights
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(j, _)| j);
        if let Some(j) = strongest
            && needle.contains(&j)
            && ids.get(j) == ids.get(p)
        {
            hits += 1;
        }
    }
    if counted == 0 {
        0.0
    } else {
        hits as f32 / counted as f32
    }
}

/// Every head's score on input `index` of `session`, [layers][heads]; None unless the input is
/// a probe (its metadata has a layout).
pub fn retrieval_scores(session: &Session, index: usize) -> Option<Vec<Vec<f32>>> {
    let info = session.meta.inputs.get(index)?;
    let layout = info.probe.as_ref()?;
    let ids = &info.token_ids;
    let t = ids.len();
    if layout.answer[1] > t || layout.needle[1] > t {
        return None;
    }
    let m = &session.meta.model;
    (0..m.layers)
        .map(|layer| {
            let parts = session.qk_parts(index, layer);
            let attn = session.layers.get(index)?.get(layer)?.attn.as_ref();
            Some(
                (0..m.heads)
                    .map(|h| {
                        copy_paste_score(ids, layout, |i| match attn {
                            Some(a) => a
                                .data
                                .get((h * t + i) * t..(h * t + i + 1) * t)
                                .map(<[f32]>::to_vec),
                            None => {
                                let mut out = vec![0.0; t];
                                parts.as_ref()?.attention().row(h, i, 0..t, &mut out);
                                Some(out)
                            }
                        })
                    })
                    .collect(),
            )
        })
        .collect::<Option<Vec<_>>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needle_is_the_last_earlier_copy_of_the_answer() {
        let ids = [9, 1, 2, 3, 8, 1, 2, 3, 7, 1, 2, 3];
        let layout = ProbeLayout::find(&ids, 3).unwrap();
        assert_eq!(layout.needle(), 5..8);
        assert_eq!(layout.answer(), 9..12);
        assert!(ProbeLayout::find(&[1, 2, 3, 4], 2).is_none());
    }

    #[test]
    fn a_head_that_copies_from_the_needle_scores_one_and_a_local_head_zero() {
        // Needle at 1..4, answer at 6..9 (the same tokens).
        let ids = [0, 5, 6, 7, 0, 0, 5, 6, 7];
        let layout = ProbeLayout::find(&ids, 3).unwrap();
        let t = ids.len();
        let copying = |i: usize| {
            // Query i predicts token i + 1: look at its copy in the needle.
            let mut row = vec![0.01; t];
            row[i + 1 - 5] = 0.9;
            Some(row)
        };
        assert_eq!(copy_paste_score(&ids, &layout, copying), 1.0);
        let local = |i: usize| {
            let mut row = vec![0.01; t];
            row[i] = 0.9;
            Some(row)
        };
        assert_eq!(copy_paste_score(&ids, &layout, local), 0.0);
    }
}
