//! Rotary position embeddings as transformers computes them: the inverse frequencies of each
//! `rope_type` this engine implements (default, linear, llama3, longrope, and llama.cpp's stored
//! frequency factors), partial rotary dimensions, and the rotate-half application to q and k.
//!
//! The frequencies are computed in f32 with transformers' operations in transformers' order, so
//! that q and k match it to rounding.

use super::packing::Packing;
use burn::tensor::{Device, Tensor, TensorData};

/// How the inverse frequencies are made from the base ones (`rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default` (and `dynamic`, which equals it up to `max_position_embeddings`, the longest
    /// input this engine accepts).
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `llama3` (Llama 3.1 and later): low frequencies divided by `factor`, high ones kept, the
    /// band between smoothly interpolated.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
    /// llama.cpp's `rope_freqs.weight` (how GGUF files store Llama 3's scaling): frequency i
    /// divided by factor i.
    Factors(Vec<f32>),
    /// `longrope` (Phi-3 128k, Phi-3.5, Phi-4-mini): per-frequency factors, the long ones for
    /// inputs longer than `original_max_positions`, and cos/sin multiplied by
    /// `attention_factor`.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_max_positions: usize,
        attention_factor: f64,
    },
}

/// A model's RoPE: base, how many leading dimensions of each head rotate, and the scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    /// `partial_rotary_factor · head_dim`; the dimensions after these pass through unrotated.
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

impl Rope {
    /// The inverse frequencies ([rotary_dim / 2]) for an input of `len` tokens, and the factor
    /// applied to cos and sin.
    pub fn inv_freq(&self, len: usize) -> (Vec<f32>, f32) {
        let dim = self.rotary_dim;
        let base = self.theta as f32;
        let exponents = (0..dim / 2).map(|i| (2 * i) as f32 / dim as f32);
        let plain: Vec<f32> = exponents.clone().map(|e| 1.0 / base.powf(e)).collect();
        match &self.scaling {
            RopeScaling::None => (plain, 1.0),
            RopeScaling::Linear { factor } => {
                (plain.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Factors(factors) => {
                (plain.iter().zip(factors).map(|(f, s)| f / s).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => {
                // transformers' _compute_llama3_parameters, each scalar cast to f32 where torch
                // meets it with an f32 tensor.
                let factor32 = *factor as f32;
                let low_wavelen = (original_max_positions / low_freq_factor) as f32;
                let high_wavelen = (original_max_positions / high_freq_factor) as f32;
                let span = (high_freq_factor - low_freq_factor) as f32;
                let two_pi = (2.0 * std::f64::consts::PI) as f32;
                let freqs = plain
                    .iter()
                    .map(|&f| {
                        let wavelen = two_pi / f;
                        let scaled = if wavelen > low_wavelen {
                            f / factor32
                        } else {
                            f
                        };
                        let smooth = (*original_max_positions as f32 / wavelen
                            - *low_freq_factor as f32)
                            / span;
                        let smoothed = (1.0 - smooth) * scaled / factor32 + smooth * scaled;
                        // As transformers writes it; the wavelengths are finite, never NaN.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                        if medium { smoothed } else { scaled }
                    })
                    .collect();
                (freqs, 1.0)
            }
            RopeScaling::LongRope {
                short,
                long,
                original_max_positions,
                attention_factor,
            } => {
                let factors = if len > *original_max_positions {
                    long
                } else {
                    short
                };
                let freqs = exponents
                    .zip(factors)
                    .map(|(e, &s)| 1.0 / (s as f32 * base.powf(e)))
                    .collect();
                (freqs, *attention_factor as f32)
            }
        }
    }

    /// cos and sin tables [1, T, rotary_dim] for the packed inputs (each input's positions from
    /// 0, and its own frequencies where they depend on its length).
    pub fn tables(&self, packing: &Packing, device: &Device) -> (Tensor<3>, Tensor<3>) {
        let d = self.rotary_dim;
        let half = d / 2;
        let t = packing.total();
        let mut cos = Vec::with_capacity(t * d);
        let mut sin = Vec::with_capacity(t * d);
        for &len in &packing.lengths {
            let (inv_freq, scale) = self.inv_freq(len);
            for pos in 0..len {
                for j in 0..d {
                    let angle = pos as f32 * inv_freq[j % half];
                    cos.push(angle.cos() * scale);
                    sin.push(angle.sin() * scale);
                }
            }
        }
        let table = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, vec![1, t, d]), device);
        (table(cos), table(sin))
    }
}

impl Rope {
    /// The tables for positions `positions` of a sequence `len` tokens long (a decoding step
    /// with a KV cache), [1, n, rotary_dim] each.
    pub fn tables_at(
        &self,
        positions: std::ops::Range<usize>,
        len: usize,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>) {
        let d = self.rotary_dim;
        let half = d / 2;
        let (inv_freq, scale) = self.inv_freq(len);
        let n = positions.len();
        let mut cos = Vec::with_capacity(n * d);
        let mut sin = Vec::with_capacity(n * d);
        for pos in positions {
            for j in 0..d {
                let angle = pos as f32 * inv_freq[j % half];
                cos.push(angle.cos() * scale);
                sin.push(angle.sin() * scale);
            }
        }
        let table = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, vec![1, n, d]), device);
        (table(cos), table(sin))
    }

    /// Whether the frequencies are the same at every length, so that keys rotated during an
    /// earlier step stay valid (not so for length-dependent scalings).
    pub fn static_over(&self, len: usize) -> bool {
        self.inv_freq(1) == self.inv_freq(len.max(1))
    }
}

/// Hugging Face's rotate-half RoPE on the first `cos.dims()[2]` dimensions of each head of `x`
/// ([heads, T, d]); any dimensions after them pass through.
pub fn rotate(x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    let [heads, t, d] = x.dims();
    let rotary = cos.dims()[2];
    let (rot, pass) = if rotary < d {
        (
            x.clone().narrow(2, 0, rotary),
            Some(x.narrow(2, rotary, d - rotary)),
        )
    } else {
        (x, None)
    };
    let half = rotary / 2;
    let first = rot.clone().narrow(2, 0, half);
    let second = rot.clone().narrow(2, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 2);
    let out = rot * cos.clone() + rotated * sin.clone();
    match pass {
        Some(pass) => Tensor::cat(vec![out, pass], 2),
        None => out.reshape([heads, t, d]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope {
            theta: 10000.0,
            rotary_dim: 8,
            scaling,
        }
    }

    #[test]
    fn llama3_keeps_high_frequencies_divides_low_ones_and_blends_between() {
        let plain = rope(RopeScaling::None).inv_freq(4).0;
        let scaled = rope(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_positions: 64.0,
        })
        .inv_freq(4)
        .0;
        // Wavelengths 2π/f: 6.3, 63, 628, 6283 against the band [16, 64].
        assert_eq!(scaled[0], plain[0]);
        assert!(scaled[1] < plain[1] && scaled[1] > plain[1] / 8.0);
        assert_eq!(scaled[2], plain[2] / 8.0);
        assert_eq!(scaled[3], plain[3] / 8.0);
    }

    #[test]
    fn longrope_switches_to_the_long_factors_past_the_original_length() {
        let r = rope(RopeScaling::LongRope {
            short: vec![1.0; 4],
            long: vec![2.0; 4],
            original_max_positions: 16,
            attention_factor: 1.5,
        });
        let plain = rope(RopeScaling::None).inv_freq(1).0;
        let (short, scale) = r.inv_freq(16);
        let (long, _) = r.inv_freq(17);
        assert_eq!(short, plain);
        assert_eq!(scale, 1.5);
        assert!((long[1] - plain[1] / 2.0).abs() < 1e-7);
    }
}
