//! Attention in tiles on a GPU, FlashAttention-style: a CubeCL kernel in which each unit owns one
//! query row of one head, the cube stages tiles of keys and values in shared memory, and each unit
//! keeps an online softmax and its weighted values in registers, reading and adding four floats
//! at a time (WGSL's vec4) where the head widths allow. It writes the context and each row's
//! logsumexp; no [rows, T] buffer of logits exists anywhere.
//!
//! This is the wgpu counterpart of `cpu_attention.rs`, used under the same conditions (a pass
//! that keeps q, k and lse, plain `scale · q·k` logits, no padded key). burn's own fused attention
//! (`burn::tensor::module::attention`) returns the context only, and the trace needs lse.
//!
//! burn runs wgpu tensors through its fusion stream. The kernel reads q, k and v where that stream
//! computed them (resolving a tensor waits for its pending work to be queued) and its outputs are
//! registered with the stream as ready tensors, as burn does for uploaded data, so the operations
//! that follow are queued after the kernel on the same device.

use super::key_mask::KeyMask;
use crate::device_buffer;
use burn::backend::Wgpu;
use burn::backend::wgpu::CubeBackend;
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::NoOp;
use burn_fusion::stream::StreamId;
use burn_ir::{BackendIr, InitOperationIr, OperationIr, OperationOutput};
use cubecl::prelude::{BufferArg, CubeCount, CubeDim};
use kernel::attention_kernel;

/// Units per cube: one query row each.
const QUERIES_PER_CUBE: usize = 64;
/// The shared memory a cube stages keys and values in: WebGPU's guaranteed minimum for a
/// workgroup, so the kernel runs on every adapter.
const SHARED_BYTES: usize = 16 << 10;
/// The most keys one tile stages.
const MAX_KEY_TILE: usize = 64;
/// The most keys one cube may walk on a software adapter. llvmpipe (lavapipe) stops every loop
/// of an invocation once their iterations add up to 65,535, to end runaway shaders, and a
/// stopped loop silently leaves keys out. The kernel unrolls its loops over a row's width, so
/// an invocation iterates about once per key; longer inputs take burn's path there, which is
/// exact.
const SOFTWARE_MAX_KEYS: usize = 48 << 10;
/// The most multiply-adds one launch of the kernel does (about 2 billion; a few milliseconds on
/// a small GPU): a long layer is computed in several launches, so no single one runs long enough
/// for a driver's watchdog to reset the device, and the window, which draws on the same device,
/// gets its frames in between.
pub const WORK_PER_LAUNCH: usize = 1 << 31;

/// `softmax(scale · q·kᵀ + mask) · v` and each row's logsumexp for tensors on burn's wgpu
/// backend: `q` [heads, T, d], `k` [kv_heads, T, d], `v` [kv_heads, T, dv] (query head h reads kv
/// head h / (heads / kv_heads)). Returns the context [heads, T, dv] and lse [heads, T], or None
/// where this kernel does not apply (another backend, tensors tracked by autodiff, padded keys,
/// shapes that do not fit); the caller computes attention its own way then.
pub fn fused_attention(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    mask: &KeyMask,
    scale: f32,
) -> Option<(Tensor<3>, Tensor<2>)> {
    fused_attention_in_launches(q, k, v, mask, scale, WORK_PER_LAUNCH)
}

/// [`fused_attention`] with at most `work_per_launch` multiply-adds per launch of the kernel
/// (at least one workgroup's rows per launch, whatever their work).
pub fn fused_attention_in_launches(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    mask: &KeyMask,
    scale: f32,
    work_per_launch: usize,
) -> Option<(Tensor<3>, Tensor<2>)> {
    if mask.has_padding() {
        return None;
    }
    let [heads, t, d] = q.dims();
    let [kv_heads, _, dv] = v.dims();
    let fits = kv_heads > 0
        && heads % kv_heads == 0
        && k.dims() == [kv_heads, t, d]
        && v.dims()[1] == t
        && t > 0
        && d > 0
        && dv > 0
        && mask.tokens() == t
        && key_tile(d, dv) > 0
        // Indices are 32-bit in the kernel.
        && heads.max(kv_heads).saturating_mul(t).saturating_mul(d.max(dv)) < u32::MAX as usize
        && t.div_ceil(QUERIES_PER_CUBE) <= u16::MAX as usize
        && heads <= u16::MAX as usize;
    if !fits {
        return None;
    }
    // Each query's visible keys as [first, end): O(T), where a mask tensor would be T². A row
    // that sees no key (never in a real pass) is left to the caller's path, which writes lse
    // −∞ for it: WGSL has no infinity to write.
    let visible: Vec<std::ops::Range<usize>> = (0..t).map(|i| mask.visible(i)).collect();
    if visible.iter().any(|keys| keys.is_empty()) {
        return None;
    }
    // The keys each workgroup walks: from its first row's first key to its last row's end.
    let walked: Vec<usize> = visible
        .chunks(QUERIES_PER_CUBE)
        .map(|rows| rows[rows.len() - 1].end - rows[0].start)
        .collect();
    let widest = walked.iter().copied().max().unwrap_or(0);
    if widest > SOFTWARE_MAX_KEYS && crate::device::wgpu_adapter_is_software() {
        return None;
    }
    let bounds: Vec<u8> = visible
        .iter()
        .flat_map(|keys| [keys.start as u32, keys.end as u32])
        .flat_map(u32::to_le_bytes)
        .collect();
    let q = contiguous_cube_tensor(q)?;
    let k = contiguous_cube_tensor(k)?;
    let v = contiguous_cube_tensor(v)?;
    let client = q.client.clone();
    let device = q.device.clone();
    let context = empty_device_dtype(
        client.clone(),
        device.clone(),
        Shape::new([heads, t, dv]),
        DType::F32,
    );
    let lse = empty_device_dtype(client.clone(), device, Shape::new([heads, t]), DType::F32);
    let bounds = client.create_from_slice(&bounds);
    let tile = key_tile(d, dv);
    let width = vector_width(d, dv);
    let per_key = heads * QUERIES_PER_CUBE * (d + dv);
    for cubes in launches(&walked, per_key, work_per_launch) {
        attention_kernel::launch(
            &client,
            CubeCount::Static(cubes.len() as u32, heads as u32, 1),
            CubeDim::new_1d(QUERIES_PER_CUBE as u32),
            width,
            q.clone().into_buffer_arg(),
            k.clone().into_buffer_arg(),
            v.clone().into_buffer_arg(),
            // SAFETY: the buffer was made from exactly 2·T u32 values.
            unsafe { BufferArg::from_raw_parts(bounds.clone(), 2 * t) },
            context.clone().into_buffer_arg(),
            lse.clone().into_buffer_arg(),
            scale,
            t as u32,
            (heads / kv_heads) as u32,
            cubes.start as u32,
            d / width,
            dv / width,
            QUERIES_PER_CUBE,
            tile,
        );
    }
    Some((into_fusion(context), into_fusion(lse)))
}

/// Consecutive workgroups (indices into `walked`, the keys each walks) grouped into launches of
/// at most `budget` multiply-adds, `per_key` a workgroup's multiply-adds per key walked; a
/// workgroup over budget on its own is a launch of its own.
fn launches(walked: &[usize], per_key: usize, budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut launches = Vec::new();
    let (mut start, mut work) = (0, 0usize);
    for (cube, &keys) in walked.iter().enumerate() {
        let cost = keys.saturating_mul(per_key);
        if cube > start && work.saturating_add(cost) > budget {
            launches.push(start..cube);
            (start, work) = (cube, 0);
        }
        work = work.saturating_add(cost);
    }
    if start < walked.len() {
        launches.push(start..walked.len());
    }
    launches
}

/// How many f32 the kernel reads and adds at once: 4 where both widths allow.
fn vector_width(d: usize, dv: usize) -> usize {
    [4, 2, 1]
        .into_iter()
        .find(|&w| d.is_multiple_of(w) && dv.is_multiple_of(w))
        .unwrap_or(1)
}

/// Keys per tile: as many as fit [`SHARED_BYTES`] with their values, a power of two, at most
/// [`MAX_KEY_TILE`]; 0 when not even one key fits.
fn key_tile(d: usize, dv: usize) -> usize {
    let fit = SHARED_BYTES / ((d + dv) * 4).max(1);
    if fit == 0 {
        return 0;
    }
    (1usize << fit.ilog2()).min(MAX_KEY_TILE)
}

/// The contiguous f32 CubeCL tensor behind a wgpu tensor (see [`device_buffer::cube_tensor`]).
fn contiguous_cube_tensor(tensor: &Tensor<3>) -> Option<CubeTensor> {
    device_buffer::cube_tensor(tensor).map(into_contiguous)
}

/// A kernel's output handed to burn's fusion stream as a ready tensor.
fn into_fusion<const D: usize>(tensor: CubeTensor) -> Tensor<D> {
    let client = burn_fusion::get_client::<CubeBackend>(&tensor.device);
    let shape = tensor.meta.shape().clone();
    let dtype = tensor.dtype;
    let handle = CubeBackend::float_tensor_handle(tensor);
    let init = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
    let fused = client
        .register(
            StreamId::current(),
            OperationIr::Init(init),
            NoOp::<CubeBackend>::new(),
        )
        .output();
    Tensor::from_primitive::<Wgpu>(fused)
}

/// The kernel, in a module of its own: CubeCL's prelude has its own `Tensor`.
mod kernel {
    use cubecl::prelude::*;

    /// One cube: `queries` query rows of head `CUBE_POS_Y`, starting at row
    /// `(first_cube + CUBE_POS_X) · queries`. The cube walks the keys any of its rows sees (an interval, since
    /// both ends of a row's visible keys never decrease from row to row) a tile at a time; every
    /// unit loads part of the tile, and each then weighs in the tile's keys its own row sees.
    /// `d` and `dv` count vectors of `N` floats; the loops over them are unrolled (see
    /// [`super::SOFTWARE_MAX_KEYS`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn attention_kernel<N: Size>(
        q: &[Vector<f32, N>],
        k: &[Vector<f32, N>],
        v: &[Vector<f32, N>],
        bounds: &[u32],
        context: &mut [Vector<f32, N>],
        lse: &mut [f32],
        scale: f32,
        tokens: u32,
        group: u32,
        first_cube: u32,
        #[comptime] d: usize,
        #[comptime] dv: usize,
        #[comptime] queries: usize,
        #[comptime] tile: usize,
    ) {
        let t = tokens as usize;
        let head = CUBE_POS_Y as usize;
        let kv = head / group as usize;
        let first = (first_cube + CUBE_POS_X) as usize * queries;
        let query = first + UNIT_POS_X as usize;
        let mut last = first + queries - 1;
        if last >= t {
            last = t - 1;
        }
        // The cube's keys: the same for every unit, so every unit meets every barrier.
        let start = bounds[first * 2] as usize;
        let end = bounds[last * 2 + 1] as usize;
        let active = query < t;
        let mut lo = 0usize;
        let mut hi = 0usize;
        let zero = Vector::<f32, N>::new(f32::new(0.0));
        let mut row = Array::<Vector<f32, N>>::new(d);
        let mut acc = Array::<Vector<f32, N>>::new(dv);
        #[unroll]
        for c in 0..d {
            row[c] = zero;
        }
        #[unroll]
        for c in 0..dv {
            acc[c] = zero;
        }
        if active {
            lo = bounds[query * 2] as usize;
            hi = bounds[query * 2 + 1] as usize;
            #[unroll]
            for c in 0..d {
                row[c] = q[(head * t + query) * d + c];
            }
        }
        let mut keys = Shared::<[Vector<f32, N>]>::new_slice(comptime!(tile * d));
        let mut values = Shared::<[Vector<f32, N>]>::new_slice(comptime!(tile * dv));
        // The running maximum logit starts below any f32 logit, so the first key's rescale is 0.
        let mut max = f32::new(-3.0e38);
        let mut sum = f32::new(0.0);
        let mut tiles = 0usize;
        if end > start {
            tiles = (end - start).div_ceil(tile);
        }
        for step in 0..tiles {
            let base = start + step * tile;
            stage(k, &mut keys, kv, base, t, d, tile, queries);
            stage(v, &mut values, kv, base, t, dv, tile, queries);
            sync_cube();
            if active {
                for j in 0..tile {
                    let key = base + j;
                    if key >= lo && key < hi {
                        let mut lanes = zero;
                        #[unroll]
                        for c in 0..d {
                            lanes += row[c] * keys[j * d + c];
                        }
                        let mut dot = f32::new(0.0);
                        #[unroll]
                        for lane in 0..N::value() {
                            dot += lanes.extract(lane);
                        }
                        let z = dot * scale;
                        if z > max {
                            let factor = (max - z).exp();
                            sum *= factor;
                            let rescale = Vector::<f32, N>::new(factor);
                            #[unroll]
                            for c in 0..dv {
                                acc[c] *= rescale;
                            }
                            max = z;
                        }
                        let p = (z - max).exp();
                        sum += p;
                        let weight = Vector::<f32, N>::new(p);
                        #[unroll]
                        for c in 0..dv {
                            acc[c] += weight * values[j * dv + c];
                        }
                    }
                }
            }
            sync_cube();
        }
        if active {
            let out = (head * t + query) * dv;
            // Every row sees a key (the host checks), so the sum is at least 1.
            let inverse = Vector::<f32, N>::new(1.0 / sum);
            #[unroll]
            for c in 0..dv {
                context[out + c] = acc[c] * inverse;
            }
            lse[head * t + query] = max + sum.ln();
        }
    }

    /// Copies the `tile` keys from `base` of kv head `kv` (rows of `width` vectors in `source`)
    /// into `staged`, zero past the last token; each unit copies its share.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn stage<N: Size>(
        source: &[Vector<f32, N>],
        staged: &mut [Vector<f32, N>],
        kv: usize,
        base: usize,
        t: usize,
        #[comptime] width: usize,
        #[comptime] tile: usize,
        #[comptime] queries: usize,
    ) {
        #[unroll]
        for s in 0..comptime!((tile * width).div_ceil(queries)) {
            let e = s * queries + UNIT_POS_X as usize;
            if e < comptime!(tile * width) {
                let key = base + e / width;
                let mut x = Vector::<f32, N>::new(f32::new(0.0));
                if key < t {
                    x = source[(kv * t + key) * width + e % width];
                }
                staged[e] = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::launches;

    #[test]
    fn workgroups_are_grouped_into_launches_within_the_budget_and_none_is_left_out() {
        // Causal rows: each workgroup walks more keys than the last.
        let walked = [64, 128, 192, 256, 320];
        assert_eq!(launches(&walked, 1, 10_000), vec![0..5]);
        assert_eq!(launches(&walked, 1, 384), vec![0..3, 3..4, 4..5]);
        // A workgroup over budget on its own still gets its launch.
        assert_eq!(
            launches(&walked, 10, 100),
            vec![0..1, 1..2, 2..3, 3..4, 4..5]
        );
        assert!(launches(&[], 1, 1).is_empty());
    }
}
