//! A tensor in host memory: the common currency between weight files and the device.

/// Row-major f32 data with its shape. Weight readers produce these, whatever the file's dtype,
/// and the model builders upload them to the device.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The transpose of a 2-D tensor. Hugging Face stores linear weights [out, in]; the forward
    /// passes multiply by [in, out], so they are turned once at load time instead of every pass.
    pub fn transposed(&self) -> Self {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut data = vec![0.0; self.data.len()];
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
