//! Times attention flow (one maximum flow per input token) on random attention of a ViT's
//! shape, `cargo run --example flow_timings -- TOKENS LAYERS`, or on the first input of a
//! session, `cargo run --example flow_timings -- SESSION.safetensors`.

use headwise_engine::analysis::flow::attention_flow;
use headwise_engine::analysis::rollout::RolloutSettings;
use headwise_engine::host::HostTensor;
use std::time::Instant;

fn main() {
    if let Some(path) = std::env::args()
        .nth(1)
        .filter(|a| a.ends_with(".safetensors"))
    {
        let session = headwise_engine::session::Session::open(std::path::Path::new(&path))
            .expect("a session");
        let layers: Vec<&HostTensor> = session.layers[0]
            .iter()
            .map(|l| {
                l.attn
                    .as_ref()
                    .expect("a session with materialised attention")
            })
            .collect();
        let start = Instant::now();
        let flow = attention_flow(&layers, &RolloutSettings::default(), 0, &|_| {});
        println!(
            "{path}: {} tokens, {} layers: {:.2} s (sum {:.4})",
            flow.len(),
            layers.len(),
            start.elapsed().as_secs_f64(),
            flow.iter().sum::<f32>()
        );
        return;
    }
    let mut args = std::env::args().skip(1);
    let t: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(65);
    let layers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    let heads = 6;
    let mut seed = 11u64;
    let attention: Vec<HostTensor> = (0..layers)
        .map(|_| {
            let mut data = Vec::with_capacity(heads * t * t);
            for _ in 0..heads * t {
                let row: Vec<f32> = (0..t)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32).powi(8)
                    })
                    .collect();
                let sum: f32 = row.iter().sum();
                data.extend(row.iter().map(|v| v / sum));
            }
            HostTensor::new(vec![heads, t, t], data)
        })
        .collect();
    let start = Instant::now();
    let flow = attention_flow(&attention, &RolloutSettings::default(), 0, &|_| {});
    let took = start.elapsed().as_secs_f64();
    let checksum: f32 = flow.iter().enumerate().map(|(i, v)| i as f32 * v).sum();
    println!("{t} tokens, {layers} layers: {took:.2} s (checksum {checksum:.6})");
}
