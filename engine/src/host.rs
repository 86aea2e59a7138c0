//! A tensor in host memory: the common currency between weight files, session files and the
//! device.

use memmap2::Mmap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// Row-major f32 data with its shape. Weight readers produce these, whatever the file's dtype,
/// and the model builders upload them to the device.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Floats,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            data: Floats::Owned(Arc::new(data)),
        }
    }

    /// The transpose of a 2-D tensor. Hugging Face stores linear weights [out, in]; the forward
    /// passes multiply by [in, out], so they are turned once at load time instead of every pass.
    /// A tensor of another rank is read as [first dimension, the rest] (a 1-D one as a column),
    /// so that a malformed weight reaches the shape checks instead of a panic here.
    pub fn transposed(&self) -> Self {
        let rows = self.shape.first().copied().unwrap_or(1);
        let cols = self.data.len().checked_div(rows).unwrap_or(0);
        let mut data = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self::new(vec![cols, rows], data)
    }

    /// Rows `start..start+len` of a 2-D tensor (used to split fused QKV weights).
    pub fn rows(&self, start: usize, len: usize) -> Self {
        let cols: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Self::new(
            shape,
            self.data[start * cols..(start + len) * cols].to_vec(),
        )
    }

    /// Columns `start..start+len` of a 2-D tensor, or elements of a 1-D one.
    pub fn cols(&self, start: usize, len: usize) -> Self {
        if self.shape.len() == 1 {
            return Self::new(vec![len], self.data[start..start + len].to_vec());
        }
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut data = Vec::with_capacity(rows * len);
        for r in 0..rows {
            data.extend_from_slice(&self.data[r * cols + start..r * cols + start + len]);
        }
        Self::new(vec![rows, len], data)
    }
}

/// A tensor's values: owned, or read in place from a memory-mapped file, so that opening a
/// large session copies nothing. Reads see a slice either way; the first write to mapped or
/// shared values copies them. Owned values are shared, so that a session derived from another
/// (value-weighted attention) shares its queries and keys instead of copying them.
#[derive(Clone)]
pub enum Floats {
    Owned(Arc<Vec<f32>>),
    Mapped {
        map: Arc<Mmap>,
        /// Byte offset of the first value in `map`.
        start: usize,
        len: usize,
    },
}

impl Floats {
    /// `len` little-endian f32s at byte `start` of `map`, read in place. None when they cannot
    /// be (out of the map, not 4-byte aligned, or a big-endian machine): decode a copy instead.
    pub fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let end = start.checked_add(len.checked_mul(4)?)?;
        let bytes = map.get(start..end)?;
        if bytes.as_ptr().align_offset(align_of::<f32>()) != 0 {
            return None;
        }
        Some(Self::Mapped { map, start, len })
    }

    /// The values as an owned vector (a copy only when they are mapped).
    pub fn into_vec(self) -> Vec<f32> {
        match self {
            Self::Owned(v) => Arc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec()),
            mapped @ Self::Mapped { .. } => mapped.to_vec(),
        }
    }

    /// Whether the values are read in place from a file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped { .. })
    }
}

impl Deref for Floats {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped { map, start, len } => {
                let bytes = &map[*start..*start + len * 4];
                // SAFETY: `mapped` checked that the range lies in the map and is aligned for
                // f32; every bit pattern is a valid f32; the map lives as long as `self`.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), *len) }
            }
        }
    }
}

impl DerefMut for Floats {
    fn deref_mut(&mut self) -> &mut [f32] {
        if let Self::Mapped { .. } = self {
            *self = Self::Owned(Arc::new(self.to_vec()));
        }
        match self {
            Self::Owned(v) => Arc::<Vec<f32>>::make_mut(v).as_mut_slice(),
            Self::Mapped { .. } => unreachable!("made owned above"),
        }
    }
}

impl From<Vec<f32>> for Floats {
    fn from(v: Vec<f32>) -> Self {
        Self::Owned(Arc::new(v))
    }
}

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Floats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_dimensional_tensor_transposes_to_a_row_instead_of_panicking() {
        let t = HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]).transposed();
        assert_eq!(t.shape, vec![1, 3]);
        assert_eq!(t.data.to_vec(), vec![1.0, 2.0, 3.0]);
        let m = HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).transposed();
        assert_eq!(m.shape, vec![3, 2]);
        assert_eq!(m.data.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
