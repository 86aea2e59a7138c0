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
use std::collections::VecDeque;

struct Edge {
    to: usize,
    capacity: f64,
}

/// A flow network with paired forward and residual edges (edge i's twin is i ^ 1).
struct Network {
    edges: Vec<Edge>,
    out: Vec<Vec<usize>>,
}

/// Capacities below this are treated as exhausted (flows are sums of f32 weights).
const EPS: f64 = 1e-12;

impl Network {
    fn new(nodes: usize) -> Self {
        Self {
            edges: Vec::new(),
            out: vec![Vec::new(); nodes],
        }
    }

    fn add(&mut self, from: usize, to: usize, capacity: f64) {
        self.out[from].push(self.edges.len());
        self.edges.push(Edge { to, capacity });
        self.out[to].push(self.edges.len());
        self.edges.push(Edge {
            to: from,
            capacity: 0.0,
        });
    }

    fn levels(&self, source: usize, sink: usize) -> Option<Vec<i32>> {
        let mut level = vec![-1; self.out.len()];
        level[source] = 0;
        let mut queue = VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for &e in &self.out[u] {
                let edge = &self.edges[e];
                if edge.capacity > EPS && level[edge.to] < 0 {
                    level[edge.to] = level[u] + 1;
                    queue.push_back(edge.to);
                }
            }
        }
        (level[sink] >= 0).then_some(level)
    }

    fn push(
        &mut self,
        u: usize,
        sink: usize,
        limit: f64,
        level: &[i32],
        next: &mut [usize],
    ) -> f64 {
        if u == sink {
            return limit;
        }
        while next[u] < self.out[u].len() {
            let e = self.out[u][next[u]];
            let (to, capacity) = (self.edges[e].to, self.edges[e].capacity);
            if capacity > EPS && level[to] == level[u] + 1 {
                let pushed = self.push(to, sink, limit.min(capacity), level, next);
                if pushed > EPS {
                    self.edges[e].capacity -= pushed;
                    self.edges[e ^ 1].capacity += pushed;
                    return pushed;
                }
            }
            next[u] += 1;
        }
        0.0
    }

    fn max_flow(&mut self, source: usize, sink: usize) -> f64 {
        let mut total = 0.0;
        while let Some(level) = self.levels(source, sink) {
            let mut next = vec![0; self.out.len()];
            loop {
                let pushed = self.push(source, sink, f64::INFINITY, &level, &mut next);
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
    let mut net = Network::new((matrices.len() + 1) * t);
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
    net
}

/// The attention flow from token `query` after the last layer to every input token: [T],
/// summing to one. `progress` receives the share of input tokens done.
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
    let source = matrices.len() * t + query;
    let mut flows = Vec::with_capacity(t);
    for sink in 0..t {
        // Each maximum flow starts from the untouched capacities.
        let mut net = network(&matrices, t);
        flows.push(if source == sink {
            0.0
        } else {
            net.max_flow(source, sink)
        });
        progress((sink + 1) as f32 / t as f32);
    }
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
        let mut net = Network::new(4);
        net.add(0, 1, 0.5);
        net.add(1, 3, 0.2);
        net.add(0, 2, 0.4);
        net.add(2, 3, 0.9);
        assert!((net.max_flow(0, 3) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn no_layers_give_no_flow() {
        let layers: Vec<HostTensor> = Vec::new();
        assert!(attention_flow(&layers, &RolloutSettings::default(), 0, &|_| {}).is_empty());
    }
}
