//! Attention flow (Abnar & Zuidema, 2020): the layers' attention as a flow network, each edge's
//! capacity the residual-augmented attention weight (the same per-layer matrix as rollout), and
//! a token's flow to each input token the maximum flow from it, at the last layer, down to that
//! input token; the flows are normalised to sum to one. Unlike rollout, a path is only as strong
//! as its weakest edge.
//!
//! One maximum flow per input token (Dinic's algorithm on the layered graph): fine for a few
//! hundred tokens and layers, but not instant; callers run it off the UI thread.

use super::rollout::{RolloutSettings, layer_matrix};
use crate::host::HostTensor;
use std::borrow::Borrow;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A flow network with paired forward and residual edges (edge e's twin is e ^ 1), its edges
/// grouped by the node they leave, so that each maximum flow walks contiguous memory. The
/// capacities live outside it: every sink's maximum flow starts from a copy of the originals.
struct Network {
    /// The node edge e points to.
    head: Vec<u32>,
    /// The original capacities (0 for the residual twins).
    capacity: Vec<f64>,
    /// The edges leaving node v are `out[first[v]..first[v + 1]]`.
    first: Vec<usize>,
    out: Vec<u32>,
}

/// Edges as they are added, before they are grouped by node.
struct NetworkBuilder {
    nodes: usize,
    edges: Vec<(u32, u32, f64)>,
}

impl NetworkBuilder {
    fn new(nodes: usize) -> Self {
        Self {
            nodes,
            edges: Vec::new(),
        }
    }

    fn add(&mut self, from: usize, to: usize, capacity: f64) {
        self.edges.push((from as u32, to as u32, capacity));
        self.edges.push((to as u32, from as u32, 0.0));
    }

    fn build(self) -> Network {
        let mut degree = vec![0usize; self.nodes + 1];
        for &(from, _, _) in &self.edges {
            degree[from as usize + 1] += 1;
        }
        for v in 0..self.nodes {
            degree[v + 1] += degree[v];
        }
        let first = degree.clone();
        let mut fill = degree;
        let mut out = vec![0u32; self.edges.len()];
        for (e, &(from, _, _)) in self.edges.iter().enumerate() {
            out[fill[from as usize]] = e as u32;
            fill[from as usize] += 1;
        }
        Network {
            head: self.edges.iter().map(|&(_, to, _)| to).collect(),
            capacity: self.edges.iter().map(|&(_, _, c)| c).collect(),
            first,
            out,
        }
    }
}

/// Capacities below this are treated as exhausted (flows are sums of f32 weights).
const EPS: f64 = 1e-12;

/// One maximum flow's working state: residual capacities, levels and current-edge pointers.
struct Residual<'a> {
    net: &'a Network,
    capacity: Vec<f64>,
    level: Vec<i32>,
    next: Vec<usize>,
    queue: Vec<u32>,
}

impl<'a> Residual<'a> {
    fn new(net: &'a Network) -> Self {
        let nodes = net.first.len() - 1;
        Self {
            net,
            capacity: net.capacity.clone(),
            level: vec![-1; nodes],
            next: vec![0; nodes],
            queue: Vec::with_capacity(nodes),
        }
    }

    fn edges(&self, u: usize) -> std::ops::Range<usize> {
        self.net.first[u]..self.net.first[u + 1]
    }

    fn levels(&mut self, source: usize, sink: usize) -> bool {
        self.level.fill(-1);
        self.level[source] = 0;
        self.queue.clear();
        self.queue.push(source as u32);
        let mut read = 0;
        while read < self.queue.len() {
            let u = self.queue[read] as usize;
            read += 1;
            for i in self.edges(u) {
                let e = self.net.out[i] as usize;
                let to = self.net.head[e] as usize;
                if self.capacity[e] > EPS && self.level[to] < 0 {
                    self.level[to] = self.level[u] + 1;
                    self.queue.push(to as u32);
                }
            }
        }
        self.level[sink] >= 0
    }

    fn push(&mut self, u: usize, sink: usize, limit: f64) -> f64 {
        if u == sink {
            return limit;
        }
        let end = self.net.first[u + 1];
        while self.next[u] < end {
            let e = self.net.out[self.next[u]] as usize;
            let to = self.net.head[e] as usize;
            let capacity = self.capacity[e];
            if capacity > EPS && self.level[to] == self.level[u] + 1 {
                let pushed = self.push(to, sink, limit.min(capacity));
                if pushed > EPS {
                    self.capacity[e] -= pushed;
                    self.capacity[e ^ 1] += pushed;
                    return pushed;
                }
            }
            self.next[u] += 1;
        }
        0.0
    }

    /// Dinic's algorithm from the original capacities.
    fn max_flow(&mut self, source: usize, sink: usize) -> f64 {
        self.capacity.copy_from_slice(&self.net.capacity);
        let mut total = 0.0;
        while self.levels(source, sink) {
            for (v, next) in self.next.iter_mut().enumerate() {
                *next = self.net.first[v];
            }
            loop {
                let pushed = self.push(source, sink, f64::INFINITY);
                if pushed <= EPS {
                    break;
                }
                total += pushed;
            }
        }
        total
    }
}

/// The flow network of the layers from `settings.start_layer`: node `layer * T + token`, layer 0
/// the input tokens, an edge from each token of layer i + 1 to each token of layer i.
fn network(matrices: &[Vec<f32>], t: usize) -> Network {
    let mut net = NetworkBuilder::new((matrices.len() + 1) * t);
    for (i, a) in matrices.iter().enumerate() {
        for k in 0..t {
            for j in 0..t {
                let w = f64::from(a[k * t + j]);
                if w > 0.0 {
                    net.add((i + 1) * t + k, i * t + j, w);
                }
            }
        }
    }
    net.build()
}

/// The attention flow from token `query` after the last layer to every input token: [T],
/// summing to one. The maximum flows to the input tokens are independent and run on every
/// core; `progress` (called on the calling thread) receives the share of input tokens done.
pub fn attention_flow<L: Borrow<HostTensor>>(
    layers: &[L],
    settings: &RolloutSettings,
    query: usize,
    progress: &dyn Fn(f32),
) -> Vec<f32> {
    let t = layers.first().map_or(0, |l| l.borrow().shape[1]);
    let matrices: Vec<Vec<f32>> = layers
        .iter()
        .skip(settings.start_layer)
        .map(|l| layer_matrix(l.borrow(), settings))
        .collect();
    if t == 0 || query >= t {
        return vec![0.0; t];
    }
    let net = network(&matrices, t);
    let source = matrices.len() * t + query;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(t);
    let done = AtomicUsize::new(0);
    // Sink s goes to thread s % threads; the calling thread is thread 0 and reports progress.
    let run = |thread: usize, finished: &dyn Fn(usize)| -> Vec<(usize, f64)> {
        let mut residual = Residual::new(&net);
        let mut flows = Vec::new();
        for sink in (thread..t).step_by(threads) {
            let flow = if source == sink {
                0.0
            } else {
                residual.max_flow(source, sink)
            };
            flows.push((sink, flow));
            finished(done.fetch_add(1, Ordering::Relaxed) + 1);
        }
        flows
    };
    let mut flows = vec![0.0f64; t];
    std::thread::scope(|scope| {
        let run = &run;
        let workers: Vec<_> = (1..threads)
            .map(|thread| scope.spawn(move || run(thread, &|_| {})))
            .collect();
        let mut all = run(0, &|finished| progress(finished as f32 / t as f32));
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        for (sink, flow) in all {
            flows[sink] = flow;
        }
    });
    progress(1.0);
    let total: f64 = flows.iter().sum();
    flows
        .iter()
        .map(|&f| if total > 0.0 { (f / total) as f32 } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_flow_is_limited_by_the_narrowest_edges() {
        // 0 -> 1 (0.5) -> 3 (0.2); 0 -> 2 (0.4) -> 3 (0.9): 0.2 + 0.4.
        let mut net = NetworkBuilder::new(4);
        net.add(0, 1, 0.5);
        net.add(1, 3, 0.2);
        net.add(0, 2, 0.4);
        net.add(2, 3, 0.9);
        let net = net.build();
        let mut residual = Residual::new(&net);
        assert!((residual.max_flow(0, 3) - 0.6).abs() < 1e-12);
        // Each maximum flow starts again from the original capacities.
        assert!((residual.max_flow(0, 3) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn no_layers_give_no_flow() {
        let layers: Vec<HostTensor> = Vec::new();
        assert!(attention_flow(&layers, &RolloutSettings::default(), 0, &|_| {}).is_empty());
    }
}
