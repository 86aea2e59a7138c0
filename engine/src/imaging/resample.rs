//! Resampling with the exact arithmetic of the reference implementations: Pillow's `resize` on
//! 8-bit images (what Hugging Face's image processors call) and PyTorch's `interpolate` on
//! grids of vectors (what ViTs use to stretch their position embeddings).

/// Pillow's resampling filters, numbered as `PIL.Image.Resampling` (and preprocessor configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    pub fn from_pil(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    fn support(self) -> f64 {
        match self {
            Self::Nearest | Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (x * PI).sin() / (x * PI)
            }
        };
        match self {
            Self::Nearest | Self::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    sinc(x) * (0.54 + 0.46 * (x * PI).cos())
                }
            }
            Self::Bicubic => keys_cubic(x, -0.5),
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Keys' cubic convolution kernel with parameter `a`.
fn keys_cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// The input samples one output sample reads: the first index and one weight per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    pub first: usize,
    pub weights: Vec<f64>,
}

/// Antialiased taps, widened by the scale when shrinking: Pillow's `precompute_coeffs`, which
/// PyTorch's `interpolate(..., antialias=True)` also follows.
pub fn antialiased_taps(input: usize, output: usize, filter: Filter) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let inverse = 1.0 / filter_scale;
            let mut weights: Vec<f64> = (first..end)
                .map(|i| filter.weight((i as f64 - center + 0.5) * inverse))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps { first, weights }
        })
        .collect()
}

/// Pillow's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis of Pillow's 8-bit resampling: weights rounded to fixed point, sums rounded and
/// clipped to 0..=255.
fn fixed_point(taps: &[Taps]) -> Vec<(usize, Vec<i32>)> {
    let one = f64::from(1u32 << PRECISION_BITS);
    taps.iter()
        .map(|t| {
            let weights = t
                .weights
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            (t.first, weights)
        })
        .collect()
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image (`channels` per pixel) as Pillow's `Image.resize` does:
/// horizontal pass, then vertical, each skipped when that side keeps its size; nearest
/// neighbour samples the pixel under each output pixel's centre.
pub fn resize_u8(
    pixels: &[u8],
    [width, height]: [usize; 2],
    channels: usize,
    [out_width, out_height]: [usize; 2],
    filter: Filter,
) -> Vec<u8> {
    if filter == Filter::Nearest {
        let mut out = Vec::with_capacity(out_width * out_height * channels);
        for y in 0..out_height {
            let sy = ((y as f64 + 0.5) * height as f64 / out_height as f64) as usize;
            for x in 0..out_width {
                let sx = ((x as f64 + 0.5) * width as f64 / out_width as f64) as usize;
                let at = (sy.min(height - 1) * width + sx.min(width - 1)) * channels;
                out.extend_from_slice(&pixels[at..at + channels]);
            }
        }
        return out;
    }
    let mut current = pixels.to_vec();
    let mut current_width = width;
    if out_width != width {
        let taps = fixed_point(&antialiased_taps(width, out_width, filter));
        let mut out = vec![0u8; out_width * height * channels];
        for y in 0..height {
            let row = &current[y * width * channels..(y + 1) * width * channels];
            for (x, (first, weights)) in taps.iter().enumerate() {
                for c in 0..channels {
                    let mut sum = 1i32 << (PRECISION_BITS - 1);
                    for (i, w) in weights.iter().enumerate() {
                        sum += i32::from(row[(first + i) * channels + c]) * w;
                    }
                    out[(y * out_width + x) * channels + c] = clip8(sum);
                }
            }
        }
        current = out;
        current_width = out_width;
    }
    if out_height != height {
        let taps = fixed_point(&antialiased_taps(height, out_height, filter));
        let stride = current_width * channels;
        let mut out = vec![0u8; out_height * stride];
        for (y, (first, weights)) in taps.iter().enumerate() {
            for i in 0..stride {
                let mut sum = 1i32 << (PRECISION_BITS - 1);
                for (k, w) in weights.iter().enumerate() {
                    sum += i32::from(current[(first + k) * stride + i]) * w;
                }
                out[y * stride + i] = clip8(sum);
            }
        }
        current = out;
    }
    current
}

/// How `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)` was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridInterpolation {
    /// `antialias=False`: four taps, a = -0.75, borders clamped.
    Bicubic,
    /// `antialias=True`: Pillow-style taps, a = -0.5, widened when shrinking.
    BicubicAntialiased,
}

/// PyTorch's non-antialiased bicubic taps for an output size.
fn bicubic_taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let floor = real.floor();
            let t = f64::from(real - floor);
            let weights = [t + 1.0, t, 1.0 - t, 2.0 - t].map(|x| keys_cubic(x, -0.75));
            // Taps past a border read the border sample; fold them onto it.
            let mut folded = vec![0.0; input];
            for (k, w) in weights.iter().enumerate() {
                let index = (floor as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
                folded[index] += w;
            }
            let first = folded.iter().position(|&w| w != 0.0).unwrap_or(0);
            let last = folded.iter().rposition(|&w| w != 0.0).unwrap_or(first);
            Taps {
                first,
                weights: folded[first..=last].to_vec(),
            }
        })
        .collect()
}

/// Resizes a [rows, cols, dim] grid of vectors to another grid (position embeddings).
pub fn resize_grid(
    grid: &[f32],
    [in_rows, in_cols]: [usize; 2],
    [out_rows, out_cols]: [usize; 2],
    dim: usize,
    how: GridInterpolation,
) -> Vec<f32> {
    let taps = |input, output| match how {
        GridInterpolation::Bicubic => bicubic_taps(input, output),
        GridInterpolation::BicubicAntialiased => antialiased_taps(input, output, Filter::Bicubic),
    };
    let (row_taps, col_taps) = (taps(in_rows, out_rows), taps(in_cols, out_cols));
    let mut out = vec![0.0f32; out_rows * out_cols * dim];
    let mut across = vec![0.0f32; dim];
    for (r, rows) in row_taps.iter().enumerate() {
        for (c, cols) in col_taps.iter().enumerate() {
            let cell = &mut out[(r * out_cols + c) * dim..][..dim];
            for (i, &wr) in rows.weights.iter().enumerate() {
                let row = rows.first + i;
                across.fill(0.0);
                for (j, &wc) in cols.weights.iter().enumerate() {
                    let src = &grid[(row * in_cols + cols.first + j) * dim..][..dim];
                    for (a, s) in across.iter_mut().zip(src) {
                        *a += wc as f32 * s;
                    }
                }
                for (o, a) in cell.iter_mut().zip(&across) {
                    *o += wr as f32 * a;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_a_grid_to_its_own_size_changes_nothing() {
        let grid: Vec<f32> = (0..4 * 5 * 2).map(|i| (i as f32).sin()).collect();
        for how in [
            GridInterpolation::Bicubic,
            GridInterpolation::BicubicAntialiased,
        ] {
            let out = resize_grid(&grid, [4, 5], [4, 5], 2, how);
            for (a, b) in grid.iter().zip(&out) {
                assert!((a - b).abs() < 1e-6, "{how:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn every_filter_keeps_a_flat_image_flat() {
        let flat = vec![77u8; 13 * 7 * 3];
        for code in 0..6 {
            let filter = Filter::from_pil(code).unwrap();
            for size in [[5, 3], [20, 11], [13, 4]] {
                let out = resize_u8(&flat, [13, 7], 3, size, filter);
                assert_eq!(out.len(), size[0] * size[1] * 3);
                assert!(out.iter().all(|&v| v == 77), "{filter:?} {size:?}");
            }
        }
    }

    #[test]
    fn shrinking_taps_cover_the_scaled_support_and_sum_to_one() {
        let taps = antialiased_taps(100, 10, Filter::Bilinear);
        assert_eq!(taps.len(), 10);
        for t in &taps {
            assert!((t.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Away from the borders a tenfold shrink reads ±10 input samples.
        for t in &taps[1..9] {
            assert!((19..=21).contains(&t.weights.len()), "{}", t.weights.len());
        }
    }
}
