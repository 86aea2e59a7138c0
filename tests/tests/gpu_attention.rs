//! The wgpu attention kernel (`model/gpu_attention.rs`) against the CPU's blocked kernel
//! (`model/cpu_attention.rs`, itself pinned to attention computed in f64 by its unit tests):
//! the same context and logsumexp for causal, bidirectional, windowed, packed and grouped-head
//! attention, at lengths that are not multiples of its tiles and head widths it reads four, two
//! or one float at a time.

use burn::tensor::{Tensor, TensorData};
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::model::cpu_attention;
use headwise_engine::model::gpu_attention;
use headwise_engine::model::key_mask::KeyMask;
use headwise_tests::wgpu_device;

/// Values in [-2, 2) from a small deterministic generator.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            ((state >> 8) as f32 / (1u32 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// One attention problem: heads, kv heads, tokens, q/k width, value width.
#[derive(Debug, Clone, Copy)]
struct Problem {
    heads: usize,
    kv_heads: usize,
    t: usize,
    d: usize,
    dv: usize,
}

fn tensors(p: Problem, device: &burn::tensor::Device) -> [Tensor<3>; 3] {
    let make = |h: usize, width: usize, seed: u32| {
        Tensor::<3>::from_data(
            TensorData::new(values(h * p.t * width, seed), vec![h, p.t, width]),
            device,
        )
    };
    [
        make(p.heads, p.d, 1),
        make(p.kv_heads, p.d, 2),
        make(p.kv_heads, p.dv, 3),
    ]
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec().expect("f32 data")
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The wgpu kernel's context and lse within 1e-5 of the CPU kernel's.
fn check(p: Problem, mask: &KeyMask, gpu: &burn::tensor::Device, cpu: &burn::tensor::Device) {
    check_in_launches(p, mask, gpu_attention::WORK_PER_LAUNCH, gpu, cpu);
}

/// [`check`] with at most `work` multiply-adds to a launch of the kernel.
fn check_in_launches(
    p: Problem,
    mask: &KeyMask,
    work: usize,
    gpu: &burn::tensor::Device,
    cpu: &burn::tensor::Device,
) {
    let scale = 1.0 / (p.d as f32).sqrt();
    let [q, k, v] = tensors(p, gpu);
    let (context, lse) = gpu_attention::fused_attention_in_launches(&q, &k, &v, mask, scale, work)
        .unwrap_or_else(|| panic!("{p:?}: the wgpu kernel declined"));
    assert_eq!(context.dims(), [p.heads, p.t, p.dv]);
    assert_eq!(lse.dims(), [p.heads, p.t]);
    let [q, k, v] = tensors(p, cpu);
    let (want_context, want_lse) =
        cpu_attention::fused_attention(&q, &k, &v, mask, scale).expect("the CPU kernel applies");
    let c = worst(&host(context), &host(want_context));
    let l = worst(&host(lse), &host(want_lse));
    assert!(
        c < 1e-5 && l < 1e-5,
        "{p:?}: context off by {c}, lse by {l}"
    );
}

#[test]
fn wgpu_kernel_equals_the_cpu_kernel_causal_windowed_packed_and_grouped() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = create_device(DeviceChoice::Cpu).expect("cpu device").device;
    let problem = |t, d, dv| Problem {
        heads: 4,
        kv_heads: 2,
        t,
        d,
        dv,
    };
    check(
        problem(300, 16, 16),
        &KeyMask::new(&[300], true, None, None),
        &gpu.device,
        &cpu,
    );
    check(
        problem(197, 8, 8),
        &KeyMask::new(&[197], false, None, None),
        &gpu.device,
        &cpu,
    );
    check(
        problem(260, 64, 64),
        &KeyMask::new(&[260], true, None, Some(37)),
        &gpu.device,
        &cpu,
    );
    check(
        problem(150, 12, 20),
        &KeyMask::new(&[70, 5, 75], true, None, None),
        &gpu.device,
        &cpu,
    );
    check(
        problem(1, 8, 8),
        &KeyMask::new(&[1], true, None, None),
        &gpu.device,
        &cpu,
    );
    // Widths the kernel reads two floats at a time, and one.
    check(
        problem(90, 6, 10),
        &KeyMask::new(&[90], true, None, None),
        &gpu.device,
        &cpu,
    );
    check(
        problem(90, 5, 7),
        &KeyMask::new(&[40, 50], false, None, None),
        &gpu.device,
        &cpu,
    );
    // Gemma's 256-wide heads: the widest the families have, 8 keys a tile.
    check(
        problem(70, 256, 256),
        &KeyMask::new(&[70], true, None, Some(20)),
        &gpu.device,
        &cpu,
    );
    check(
        problem(1500, 64, 64),
        &KeyMask::new(&[1500], true, None, None),
        &gpu.device,
        &cpu,
    );
}

#[test]
fn a_layer_split_into_many_launches_gives_what_one_launch_gives() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = create_device(DeviceChoice::Cpu).expect("cpu device").device;
    let p = Problem {
        heads: 4,
        kv_heads: 2,
        t: 1000,
        d: 16,
        dv: 16,
    };
    // A workgroup of the last rows costs 4 heads × 64 rows × 1,000 keys × 32 = 8.2M
    // multiply-adds: about a launch per workgroup from the middle on.
    check_in_launches(
        p,
        &KeyMask::new(&[p.t], true, None, None),
        8_000_000,
        &gpu.device,
        &cpu,
    );
    check_in_launches(
        p,
        &KeyMask::new(&[400, 600], true, None, Some(90)),
        1,
        &gpu.device,
        &cpu,
    );
}

#[test]
fn wgpu_kernel_declines_padded_keys_and_cpu_tensors() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = create_device(DeviceChoice::Cpu).expect("cpu device").device;
    let p = Problem {
        heads: 2,
        kv_heads: 2,
        t: 10,
        d: 8,
        dv: 8,
    };
    let [q, k, v] = tensors(p, &gpu.device);
    let mut valid = vec![true; 10];
    valid[3] = false;
    let padded = KeyMask::new(&[10], true, Some(&valid), None);
    assert!(gpu_attention::fused_attention(&q, &k, &v, &padded, 0.5).is_none());
    let [q, k, v] = tensors(p, &cpu);
    let plain = KeyMask::new(&[10], true, None, None);
    assert!(gpu_attention::fused_attention(&q, &k, &v, &plain, 0.5).is_none());
}

#[test]
fn a_software_adapter_leaves_rows_that_walk_more_keys_than_its_loops_allow_to_burn() {
    let Some(gpu) = wgpu_device() else { return };
    let software = headwise_engine::device::wgpu_adapter_is_software();
    let p = Problem {
        heads: 1,
        kv_heads: 1,
        t: 50_000,
        d: 4,
        dv: 4,
    };
    let [q, k, v] = tensors(p, &gpu.device);
    // Every row sees 50,000 keys: past llvmpipe's 65,535 loop iterations per invocation.
    let open = KeyMask::new(&[p.t], false, None, None);
    let whole = gpu_attention::fused_attention(&q, &k, &v, &open, 0.5);
    assert_eq!(whole.is_none(), software, "software adapter: {software}");
    // The same length with a window walks a few hundred keys a cube: the kernel applies.
    let cpu = create_device(DeviceChoice::Cpu).expect("cpu device").device;
    check(
        p,
        &KeyMask::new(&[p.t], true, None, Some(100)),
        &gpu.device,
        &cpu,
    );
}
