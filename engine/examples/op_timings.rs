//! Times the tensor operations a forward pass is made of, on a chosen device, so that a slow
//! forward pass can be traced to its operation. `cargo run --example op_timings -- cpu|gpu`.

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Distribution, Tensor};
use headwise_engine::device::{DeviceChoice, create_device};
use std::time::Instant;

fn time(name: &str, device: &burn::tensor::Device, mut f: impl FnMut() -> Tensor<2>) {
    let _ = f().into_data();
    let runs = 20;
    let start = Instant::now();
    for _ in 0..runs {
        let _ = f().into_data();
    }
    device.sync().ok();
    println!(
        "{name:40} {:8.3} ms",
        start.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
}

fn main() {
    let choice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cpu".into())
        .parse()
        .unwrap_or(DeviceChoice::Cpu);
    let device = create_device(choice).expect("device").device;
    let (t, hidden, inner, heads) = (128, 384, 1536, 12);
    let d = hidden / heads;
    let x = Tensor::<2>::random([t, hidden], Distribution::Default, &device);
    let w = Tensor::<2>::random([hidden, inner], Distribution::Default, &device);
    let w_sq = Tensor::<2>::random([hidden, hidden], Distribution::Default, &device);
    let q = Tensor::<3>::random([heads, t, d], Distribution::Default, &device);
    let k = Tensor::<3>::random([heads, t, d], Distribution::Default, &device);
    let h = Tensor::<2>::random([t, inner], Distribution::Default, &device);
    time("matmul [128,384]x[384,1536]", &device, || {
        x.clone().matmul(w.clone())
    });
    time("matmul [128,384]x[384,384]", &device, || {
        x.clone().matmul(w_sq.clone())
    });
    time("batched q·kᵀ [12,128,32]x[12,32,128]", &device, || {
        q.clone()
            .matmul(k.clone().swap_dims(1, 2))
            .reshape([heads * t, t])
    });
    time("softmax [12,128,128]", &device, || {
        softmax(q.clone().matmul(k.clone().swap_dims(1, 2)), 2).reshape([heads * t, t])
    });
    time("split heads + merge", &device, || {
        x.clone()
            .reshape([t, heads, d])
            .swap_dims(0, 1)
            .swap_dims(0, 1)
            .reshape([t, hidden])
    });
    time("gelu [128,1536]", &device, || gelu(h.clone()));
    time("layernorm-like [128,384]", &device, || {
        let (var, mean) = x.clone().var_mean_bias(1);
        (x.clone() - mean) / (var + 1e-12).sqrt()
    });
}
