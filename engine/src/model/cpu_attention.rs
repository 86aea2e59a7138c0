//! Attention in tiles on the CPU, FlashAttention-style: for each block of queries, the logits
//! against one block of keys at a time, an online softmax, and the values weighed in as it goes.
//! No [rows, T] buffer of logits exists, and q·kᵀ and p·v run on blocks that stay in cache, in
//! register-blocked loops the compiler vectorises (AVX-512 or AVX2 with FMA, chosen at run
//! time). burn's tiled path in `attend` made thin matrix products of [rows, d] × [d, T] and wrote
//! every tile's logits and probabilities to memory between them.
//!
//! Used for passes that keep q, k and lse rather than attention (long inputs), when the tensors
//! live on burn's Flex CPU backend, no key is padded, and the logits are plain `scale · q·k`
//! (no soft-cap, no scale edit); `attend` keeps its burn path for every other case.

use super::cpu_kernels::{exp, lanes_fold, with_flex_values};
use super::key_mask::KeyMask;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// Queries per block: a multiple of every register block's rows.
const QUERY_BLOCK: usize = 64;
/// Keys per block: the logits of a query block against it are 32 KiB.
const KEY_BLOCK: usize = 128;
/// The widest vector chunk of the kernels: value rows are padded to a multiple of it so that a
/// chunk never reads past them.
const PAD: usize = 32;

/// The sizes of one layer's attention.
#[derive(Debug, Clone, Copy)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    t: usize,
    d: usize,
    dv: usize,
}

/// `softmax(scale · q·kᵀ + mask) · v` and each row's logsumexp, for `q` [heads, T, d] and `k`,
/// `v` [kv_heads, T, d] (query head h reads kv head h / (heads / kv_heads)): the context
/// [heads, T, dv] and lse [heads, T]. None where this kernel does not apply (another backend,
/// padded keys); the caller computes attention its own way then.
pub fn fused_attention(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    mask: &KeyMask,
    scale: f32,
) -> Option<(Tensor<3>, Tensor<2>)> {
    if mask.has_padding() {
        return None;
    }
    let [heads, t, d] = q.dims();
    let [kv_heads, _, dv] = v.dims();
    if kv_heads == 0 || heads % kv_heads != 0 || k.dims() != [kv_heads, t, d] {
        return None;
    }
    let shape = Shape {
        heads,
        kv_heads,
        t,
        d,
        dv,
    };
    let (context, lse) = with_flex_values(q, |q| {
        with_flex_values(k, |k| {
            with_flex_values(v, |v| attention_in_blocks(q, k, v, shape, mask, scale))
        })
    })
    .flatten()
    .flatten()?;
    let device = q.device();
    Some((
        Tensor::from_data(TensorData::new(context, vec![heads, t, dv]), &device),
        Tensor::from_data(TensorData::new(lse, vec![heads, t]), &device),
    ))
}

/// The kernel on host slices: see [`fused_attention`].
fn attention_in_blocks(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: Shape,
    mask: &KeyMask,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let Shape {
        heads,
        kv_heads,
        t,
        d,
        dv,
    } = shape;
    let padded_dv = dv.next_multiple_of(PAD);
    // Kᵀ per kv head in key blocks, [blocks, d, KEY_BLOCK]: a key block's logits are rows of
    // one contiguous block weighed by q (rows of a whole [d, T] matrix lie pages apart and fight
    // over the same cache sets).
    let blocks = t.div_ceil(KEY_BLOCK);
    let mut kt = vec![0.0f32; kv_heads * blocks * d * KEY_BLOCK];
    kt.par_chunks_mut((blocks * d * KEY_BLOCK).max(1))
        .zip(k.par_chunks((t * d).max(1)))
        .for_each(|(out, keys)| {
            for (j, key) in keys.chunks_exact(d.max(1)).enumerate() {
                let block = &mut out[(j / KEY_BLOCK) * d * KEY_BLOCK..];
                for (c, &value) in key.iter().enumerate() {
                    block[c * KEY_BLOCK + j % KEY_BLOCK] = value;
                }
            }
        });
    // V per kv head, [T, dv rounded up to PAD]: a chunk of a value row is never short.
    let mut vp = vec![0.0f32; kv_heads * t * padded_dv];
    vp.par_chunks_mut((t * padded_dv).max(1))
        .zip(v.par_chunks(t * dv))
        .for_each(|(out, values)| {
            for (row, value) in out.chunks_exact_mut(padded_dv).zip(values.chunks_exact(dv)) {
                row[..dv].copy_from_slice(value);
            }
        });
    let mut context = vec![0.0f32; heads * t * dv];
    let mut lse = vec![0.0f32; heads * t];
    if t == 0 || d == 0 {
        return (context, lse);
    }
    let group = heads / kv_heads;
    let kernel = Kernel::for_this_cpu();
    context
        .par_chunks_mut(t * dv.max(1))
        .zip(lse.par_chunks_mut(t))
        .enumerate()
        .for_each(|(h, (context, lse))| {
            let g = h / group;
            let head = HeadInputs {
                q: &q[h * t * d..][..t * d],
                kt: &kt[g * blocks * d * KEY_BLOCK..][..blocks * d * KEY_BLOCK],
                v: &vp[g * t * padded_dv..][..t * padded_dv],
                d,
                dv,
                padded_dv,
            };
            context
                .par_chunks_mut(QUERY_BLOCK * dv.max(1))
                .zip(lse.par_chunks_mut(QUERY_BLOCK))
                .enumerate()
                .for_each_init(
                    || Scratch::new(d, padded_dv),
                    |scratch, (b, (context, lse))| {
                        let rows = b * QUERY_BLOCK..b * QUERY_BLOCK + lse.len();
                        query_block(&head, kernel, mask, scale, rows, scratch, context, lse);
                    },
                );
        });
    (context, lse)
}

/// One head's inputs as the kernels read them.
struct HeadInputs<'a> {
    q: &'a [f32],
    /// Kᵀ in key blocks, [blocks, d, KEY_BLOCK].
    kt: &'a [f32],
    /// V, [T, padded_dv].
    v: &'a [f32],
    d: usize,
    dv: usize,
    padded_dv: usize,
}

/// A worker's buffers for one query block, reused from block to block.
struct Scratch {
    /// The block's queries, [QUERY_BLOCK, d], zero past the last row.
    q: Vec<f32>,
    /// Logits, then probabilities, of the block against one key block: [QUERY_BLOCK, KEY_BLOCK].
    s: Vec<f32>,
    /// The weighted values so far, [QUERY_BLOCK, padded_dv].
    acc: Vec<f32>,
    /// Each row's running maximum logit and sum of exponentials.
    max: [f32; QUERY_BLOCK],
    sum: [f32; QUERY_BLOCK],
}

impl Scratch {
    fn new(d: usize, padded_dv: usize) -> Self {
        Self {
            q: vec![0.0; QUERY_BLOCK * d],
            s: vec![0.0; QUERY_BLOCK * KEY_BLOCK],
            acc: vec![0.0; QUERY_BLOCK * padded_dv],
            max: [f32::NEG_INFINITY; QUERY_BLOCK],
            sum: [0.0; QUERY_BLOCK],
        }
    }
}

/// The queries `rows` of one head against every key they see, block by block.
#[allow(clippy::too_many_arguments)]
fn query_block(
    head: &HeadInputs,
    kernel: Kernel,
    mask: &KeyMask,
    scale: f32,
    rows: std::ops::Range<usize>,
    scratch: &mut Scratch,
    context: &mut [f32],
    lse: &mut [f32],
) {
    let (d, dv, padded_dv) = (head.d, head.dv, head.padded_dv);
    let n = rows.len();
    scratch.q.fill(0.0);
    scratch.q[..n * d].copy_from_slice(&head.q[rows.start * d..rows.end * d]);
    scratch.acc.fill(0.0);
    scratch.max.fill(f32::NEG_INFINITY);
    scratch.sum.fill(0.0);
    let keys = mask.key_range(rows.clone());
    // Key blocks start at multiples of KEY_BLOCK, where Kᵀ's blocks do; keys before the rows'
    // first visible one get probability 0 like any other hidden key.
    let first = keys.start / KEY_BLOCK * KEY_BLOCK;
    for start in (first..keys.end).step_by(KEY_BLOCK) {
        let block = KeyBlock {
            start,
            width: KEY_BLOCK.min(keys.end - start),
        };
        let kt = &head.kt[(start / KEY_BLOCK) * d * KEY_BLOCK..][..d * KEY_BLOCK];
        kernel.logits(&scratch.q, kt, d, block, &mut scratch.s);
        kernel.online_softmax(mask, scale, rows.clone(), block, padded_dv, scratch);
        kernel.weigh_values(&scratch.s, head.v, padded_dv, block, &mut scratch.acc);
    }
    for r in 0..n {
        let out = &mut context[r * dv..][..dv];
        let sum = scratch.sum[r];
        if sum > 0.0 {
            let inverse = 1.0 / sum;
            for (o, &a) in out.iter_mut().zip(&scratch.acc[r * padded_dv..][..dv]) {
                *o = a * inverse;
            }
            lse[r] = scratch.max[r] + sum.ln();
        } else {
            // A query that sees no key (never in a real pass): softmax over nothing is zero.
            out.fill(0.0);
            lse[r] = f32::NEG_INFINITY;
        }
    }
}

/// The keys `start..start + width` of one step of a query block.
#[derive(Debug, Clone, Copy)]
struct KeyBlock {
    start: usize,
    width: usize,
}

/// The register-blocked loops, compiled for the widest vectors this CPU has.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

/// `a · b + c` without fusing, where the CPU has no FMA.
fn unfused(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

impl Kernel {
    fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// `s[r, c] = q[r] · k[start + c]` for every row of the query block, over the key block
    /// rounded up to whole vector chunks; `kt` is the block's Kᵀ, [d, KEY_BLOCK].
    fn logits(self, q: &[f32], kt: &[f32], d: usize, keys: KeyBlock, s: &mut [f32]) {
        match self {
            // SAFETY: the CPU has the features each function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { logits_avx512(q, kt, d, keys, s) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { logits_avx2(q, kt, d, keys, s) },
            Kernel::Portable => logits_body::<4, 8>(q, kt, d, keys, s, unfused),
        }
    }

    /// Each row's logits over the keys it sees into probabilities against its running maximum,
    /// with its running sum and weighted values rescaled to that maximum; keys it does not see
    /// get probability 0.
    fn online_softmax(
        self,
        mask: &KeyMask,
        scale: f32,
        rows: std::ops::Range<usize>,
        keys: KeyBlock,
        padded_dv: usize,
        scratch: &mut Scratch,
    ) {
        match self {
            // SAFETY: the CPU has the features each function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                online_softmax_avx512(mask, scale, rows, keys, padded_dv, scratch)
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe {
                online_softmax_avx2(mask, scale, rows, keys, padded_dv, scratch)
            },
            Kernel::Portable => online_softmax_body(mask, scale, rows, keys, padded_dv, scratch),
        }
    }

    /// `acc[r] += Σ_c s[r, c] · v[start + c]` for every row of the query block.
    fn weigh_values(self, s: &[f32], v: &[f32], padded_dv: usize, keys: KeyBlock, acc: &mut [f32]) {
        match self {
            // SAFETY: the CPU has the features each function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { values_avx512(s, v, padded_dv, keys, acc) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { values_avx2(s, v, padded_dv, keys, acc) },
            Kernel::Portable => values_body::<4, 8>(s, v, padded_dv, keys, acc, unfused),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn logits_avx512(q: &[f32], kt: &[f32], d: usize, keys: KeyBlock, s: &mut [f32]) {
    logits_body::<8, 32>(q, kt, d, keys, s, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn logits_avx2(q: &[f32], kt: &[f32], d: usize, keys: KeyBlock, s: &mut [f32]) {
    logits_body::<4, 16>(q, kt, d, keys, s, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn online_softmax_avx512(
    mask: &KeyMask,
    scale: f32,
    rows: std::ops::Range<usize>,
    keys: KeyBlock,
    padded_dv: usize,
    scratch: &mut Scratch,
) {
    online_softmax_body(mask, scale, rows, keys, padded_dv, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn online_softmax_avx2(
    mask: &KeyMask,
    scale: f32,
    rows: std::ops::Range<usize>,
    keys: KeyBlock,
    padded_dv: usize,
    scratch: &mut Scratch,
) {
    online_softmax_body(mask, scale, rows, keys, padded_dv, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn values_avx512(s: &[f32], v: &[f32], padded_dv: usize, keys: KeyBlock, acc: &mut [f32]) {
    values_body::<8, 32>(s, v, padded_dv, keys, acc, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn values_avx2(s: &[f32], v: &[f32], padded_dv: usize, keys: KeyBlock, acc: &mut [f32]) {
    values_body::<4, 16>(s, v, padded_dv, keys, acc, f32::mul_add);
}

/// See [`Kernel::online_softmax`].
#[inline(always)]
fn online_softmax_body(
    mask: &KeyMask,
    scale: f32,
    rows: std::ops::Range<usize>,
    keys: KeyBlock,
    padded_dv: usize,
    scratch: &mut Scratch,
) {
    let KeyBlock { start, width } = keys;
    for r in 0..rows.len() {
        let visible = mask.visible(rows.start + r);
        let a = visible.start.clamp(start, start + width) - start;
        let b = visible.end.clamp(start, start + width) - start;
        let s = &mut scratch.s[r * KEY_BLOCK..][..width];
        if a >= b {
            s.fill(0.0);
            continue;
        }
        s[..a].fill(0.0);
        s[b..].fill(0.0);
        let seen = &mut s[a..b];
        let block_max = lanes_fold(seen, f32::NEG_INFINITY, f32::max) * scale;
        let max = scratch.max[r].max(block_max);
        for x in seen.iter_mut() {
            *x = exp(*x * scale - max);
        }
        let sum = lanes_fold(seen, 0.0, |a, b| a + b);
        // exp(-inf) is 0: a row's first visible block starts its sum afresh.
        let correction = exp(scratch.max[r] - max);
        if correction != 1.0 {
            for a in &mut scratch.acc[r * padded_dv..][..padded_dv] {
                *a *= correction;
            }
        }
        scratch.sum[r] = scratch.sum[r] * correction + sum;
        scratch.max[r] = max;
    }
}

/// `s[r, c] = q[r] · k[start + c]` for every row of the query block and `c < chunks`, in blocks
/// of `R` rows × `C` keys whose sums stay in registers while the `d` products accumulate.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn logits_body<const R: usize, const C: usize>(
    q: &[f32],
    kt: &[f32],
    d: usize,
    keys: KeyBlock,
    s: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    for r0 in (0..QUERY_BLOCK).step_by(R) {
        for c0 in (0..keys.width.next_multiple_of(C)).step_by(C) {
            let mut sums = [[0.0f32; C]; R];
            for c in 0..d {
                let keys: &[f32; C] = kt[c * KEY_BLOCK + c0..][..C]
                    .try_into()
                    .expect("a chunk of C keys");
                for (rr, row) in sums.iter_mut().enumerate() {
                    let query = q[(r0 + rr) * d + c];
                    for (sum, &key) in row.iter_mut().zip(keys) {
                        *sum = fma(query, key, *sum);
                    }
                }
            }
            for (rr, row) in sums.iter().enumerate() {
                s[(r0 + rr) * KEY_BLOCK + c0..][..C].copy_from_slice(row);
            }
        }
    }
}

/// `acc[r] += Σ_c s[r, c] · v[start + c]` for every row of the query block, `c < width`, in
/// blocks of `R` rows × `C` value columns held in registers while the block's keys are weighed
/// in.
#[inline(always)]
fn values_body<const R: usize, const C: usize>(
    s: &[f32],
    v: &[f32],
    padded_dv: usize,
    keys: KeyBlock,
    acc: &mut [f32],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let KeyBlock { start, width } = keys;
    for r0 in (0..QUERY_BLOCK).step_by(R) {
        for x0 in (0..padded_dv).step_by(C) {
            let mut sums = [[0.0f32; C]; R];
            for (rr, row) in sums.iter_mut().enumerate() {
                row.copy_from_slice(&acc[(r0 + rr) * padded_dv + x0..][..C]);
            }
            for c in 0..width {
                let values: &[f32; C] = v[(start + c) * padded_dv + x0..][..C]
                    .try_into()
                    .expect("a chunk of C values");
                for (rr, row) in sums.iter_mut().enumerate() {
                    let p = s[(r0 + rr) * KEY_BLOCK + c];
                    for (sum, &value) in row.iter_mut().zip(values) {
                        *sum = fma(p, value, *sum);
                    }
                }
            }
            for (rr, row) in sums.iter().enumerate() {
                acc[(r0 + rr) * padded_dv + x0..][..C].copy_from_slice(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention computed the plain way, in f64: [heads, T, dv] and [heads, T].
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        shape: Shape,
        mask: &KeyMask,
        scale: f32,
    ) -> (Vec<f64>, Vec<f64>) {
        let Shape {
            heads,
            kv_heads,
            t,
            d,
            dv,
        } = shape;
        let group = heads / kv_heads;
        let mut context = vec![0.0; heads * t * dv];
        let mut lse = vec![0.0; heads * t];
        for h in 0..heads {
            let g = h / group;
            for i in 0..t {
                let visible = mask.visible(i);
                let z: Vec<f64> = visible
                    .clone()
                    .map(|j| {
                        (0..d)
                            .map(|c| q[(h * t + i) * d + c] as f64 * k[(g * t + j) * d + c] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|x| (x - max).exp()).sum();
                lse[h * t + i] = max + sum.ln();
                for (j, zj) in visible.zip(&z) {
                    let p = (zj - max).exp() / sum;
                    for x in 0..dv {
                        context[(h * t + i) * dv + x] += p * v[(g * t + j) * dv + x] as f64;
                    }
                }
            }
        }
        (context, lse)
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator: values in [-2, 2).
        let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
                ((state >> 8) as f32 / (1u32 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// The blocked kernel's context and lse within 1e-5 of f64 attention (seen: 1e-6).
    fn check(shape: Shape, mask: &KeyMask) {
        let Shape {
            heads,
            kv_heads,
            t,
            d,
            dv,
        } = shape;
        let q = values(heads * t * d, 1);
        let k = values(kv_heads * t * d, 2);
        let v = values(kv_heads * t * dv, 3);
        let scale = 1.0 / (d as f32).sqrt();
        let (context, lse) = attention_in_blocks(&q, &k, &v, shape, mask, scale);
        let (want_context, want_lse) = reference(&q, &k, &v, shape, mask, scale);
        let worst = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - y).abs())
                .fold(0.0, f64::max)
        };
        let (c, l) = (worst(&context, &want_context), worst(&lse, &want_lse));
        assert!(
            c < 1e-5 && l < 1e-5,
            "{shape:?}: context off by {c}, lse by {l}"
        );
    }

    #[test]
    fn blocked_attention_equals_plain_attention_causal_windowed_packed_and_grouped() {
        // Lengths that are not multiples of the blocks, head sizes that are not multiples of a
        // vector chunk, grouped kv heads.
        let shape = |t, d, dv| Shape {
            heads: 4,
            kv_heads: 2,
            t,
            d,
            dv,
        };
        check(shape(300, 16, 16), &KeyMask::new(&[300], true, None, None));
        check(shape(197, 8, 8), &KeyMask::new(&[197], false, None, None));
        check(
            shape(260, 64, 64),
            &KeyMask::new(&[260], true, None, Some(37)),
        );
        check(
            shape(150, 12, 20),
            &KeyMask::new(&[70, 5, 75], true, None, None),
        );
        check(shape(1, 8, 8), &KeyMask::new(&[1], true, None, None));
        check(
            shape(4096, 64, 64),
            &KeyMask::new(&[4096], true, None, None),
        );
    }
}
