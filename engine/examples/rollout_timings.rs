//! Times attention rollout at DINOv2-S's shapes at 448 px (12 layers × 6 heads × 1,025 tokens):
//! the host version against the device version, per slider move (layer matrices) and per
//! mouse move (one row). `cargo run --example rollout_timings -- cpu|gpu [TOKENS]`.

use headwise_engine::analysis::rollout::{Fusion, LayerMatrices, RolloutSettings, rollout_row_of};
use headwise_engine::analysis::rollout_device::DeviceLayers;
use headwise_engine::device::{DeviceChoice, create_device};
use headwise_engine::host::HostTensor;
use std::time::Instant;

fn random_attention(heads: usize, t: usize, seed: &mut u64) -> HostTensor {
    let mut data = Vec::with_capacity(heads * t * t);
    for _ in 0..heads * t {
        let row: Vec<f32> = (0..t)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32).powi(8)
            })
            .collect();
        let sum: f32 = row.iter().sum();
        data.extend(row.iter().map(|v| v / sum));
    }
    HostTensor::new(vec![heads, t, t], data)
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let choice: DeviceChoice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cpu".into())
        .parse()
        .unwrap_or(DeviceChoice::Cpu);
    let device = create_device(choice).expect("device");
    let t: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1025);
    let (layers, heads) = (12, 6);
    let mut seed = 7;
    let attention: Vec<HostTensor> = (0..layers)
        .map(|_| random_attention(heads, t, &mut seed))
        .collect();
    let settings = RolloutSettings {
        fusion: Fusion::Mean,
        discard_ratio: 0.5,
        start_layer: 0,
    };
    let start = Instant::now();
    let host = LayerMatrices::new(&attention, &settings);
    let host_matrices = ms(start);
    let start = Instant::now();
    let host_row = rollout_row_of(&host, 0);
    let host_row_ms = ms(start);

    let uploaded = DeviceLayers::upload(&attention, &device.device);
    // Warm-up: kernels compile on first use on wgpu.
    let _ = uploaded.matrices(&settings).row(0);
    let start = Instant::now();
    let matrices = uploaded.matrices(&settings);
    let device_row = matrices.row(0).expect("row");
    let device_matrices_and_row = ms(start);
    let start = Instant::now();
    let _ = matrices.row(1).expect("row");
    let device_row_ms = ms(start);
    let diff = host_row
        .iter()
        .zip(&device_row)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("device: {}", device.description);
    println!("host:   layer matrices {host_matrices:.1} ms, a row {host_row_ms:.2} ms");
    println!(
        "device: layer matrices + a row {device_matrices_and_row:.1} ms, a row {device_row_ms:.2} ms"
    );
    println!("largest difference between the rows: {diff:e}");
}
