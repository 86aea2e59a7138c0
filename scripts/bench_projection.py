#!/usr/bin/env python3
"""Query-key projections: headwise against the reference implementations, in one run.

On one machine, one after the other, on the same vectors:
  * PCA of the joint query-key embedding of all 72 heads of MiniLM over a corpus of at least
    10,000 tokens: `headwise bench project --method pca` against numpy + scikit-learn's PCA
    (the joint normalisation in numpy, then PCA(n_components=2) per head);
  * UMAP and t-SNE of one head at 10,000 points (5,000 queries and 5,000 keys): headwise
    against umap-learn (UMAP(random_state=0), after an unmeasured warm-up that compiles its numba
    code) and scikit-learn (TSNE(random_state=0), Barnes-Hut).
The corpus is the opening of the default corpus (assets/corpus/moby-dick.txt), traced by
`headwise trace --corpus` on the CPU and cut to exactly 10,000 (or 5,000) tokens; the references
read the same session file and take the same tokens.

Usage: python3 scripts/bench_projection.py [--headwise PATH] [--device cpu|auto] [--runs R]
"""
import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import sklearn
import umap
from safetensors.numpy import load_file
from safetensors import safe_open
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "assets" / "corpus" / "moby-dick.txt"


def trace_corpus(headwise, tokens, out, workdir):
    """Traces the first lines of the corpus that give at least `tokens` tokens."""
    lines = [l for l in CORPUS.read_text(encoding="utf-8").splitlines() if l.strip()]
    # Grow the line count until the session holds enough tokens (MiniLM's tokenizer).
    count = max(1, tokens // 24)
    while True:
        subset = workdir / "corpus.txt"
        subset.write_text("\n".join(lines[:count]) + "\n", encoding="utf-8")
        subprocess.run([headwise, "trace", "--model", "minilm", "--corpus", str(subset), "--device", "cpu",
                        "--out", str(out)], check=True, capture_output=True)
        with safe_open(str(out), "np") as f:
            meta = json.loads(f.metadata()["headwise"])
        n = sum(len(i["tokens"]) for i in meta["inputs"])
        if n >= tokens or count >= len(lines):
            return meta, n
        count = int(count * tokens / n) + 1


def head_vectors(tensors, meta, layer, head, tokens):
    """The first `tokens` queries and keys of a head, in input order then token order."""
    inputs = range(len(meta["inputs"]))
    group = meta["model"]["heads"] // meta["model"]["kv_heads"]
    q = np.concatenate([tensors[f"q/{i}/{layer}"][head] for i in inputs])[:tokens].astype(np.float64)
    k = np.concatenate([tensors[f"k/{i}/{layer}"][head // group] for i in inputs])[:tokens].astype(np.float64)
    return q, k


def joint(q, k):
    k = k - k.mean(0) + q.mean(0)
    c = np.sqrt(np.linalg.norm(k, axis=1).mean() / np.linalg.norm(q, axis=1).mean())
    return np.concatenate([q * c, k / c]).astype(np.float32)


def headwise_bench(headwise, session, method, device, runs, tokens, heads=None):
    args = [headwise, "bench", "project", "--session", str(session), "--method", method, "--device", device,
            "--runs", str(runs), "--tokens", str(tokens)]
    if heads:
        args += ["--heads", heads]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headwise", default="headwise")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pca_session = tmp / "pca.safetensors"
        meta, _ = trace_corpus(args.headwise, 10_000, pca_session, tmp)
        n = 10_000
        tensors = load_file(str(pca_session))
        layers, heads = meta["model"]["layers"], meta["model"]["heads"]

        def reference_pca():
            for layer in range(layers):
                for head in range(heads):
                    PCA(n_components=2, svd_solver="full").fit_transform(joint(*head_vectors(tensors, meta, layer, head, n)))

        ours = headwise_bench(args.headwise, pca_session, "pca", args.device, args.runs, n)
        theirs = median_time(reference_pca, args.runs)
        rows.append(("PCA, all %d heads, %d tokens (%d points per head)" % (layers * heads, n, 2 * n),
                     ours["median_ms"], theirs, "numpy + scikit-learn %s PCA" % sklearn.__version__))

        layout_session = tmp / "layout.safetensors"
        meta, _ = trace_corpus(args.headwise, 5_000, layout_session, tmp)
        n = 5_000
        tensors = load_file(str(layout_session))
        x = joint(*head_vectors(tensors, meta, 0, 0, n))
        umap.UMAP(random_state=0).fit_transform(x[:500])  # compiles umap-learn's numba code
        for method, reference, name in [
            ("umap", lambda: umap.UMAP(random_state=0).fit_transform(x), "umap-learn %s" % umap.__version__),
            ("tsne", lambda: TSNE(random_state=0).fit_transform(x), "scikit-learn %s TSNE" % sklearn.__version__),
        ]:
            ours = headwise_bench(args.headwise, layout_session, method, args.device, 1, n, heads="0.0")
            theirs = median_time(reference, 1)
            rows.append(("%s, head 0.0, %d points" % (method.upper().replace("TSNE", "t-SNE"), 2 * n),
                         ours["median_ms"], theirs, name))
    print("| what | headwise (ms) | reference (ms) | reference | headwise speed |")
    print("|---|---|---|---|---|")
    for what, ours, theirs, name in rows:
        print(f"| {what} | {ours:.1f} | {theirs:.1f} | {name} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
