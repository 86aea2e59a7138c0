#!/usr/bin/env python3
"""Generates tests/fixtures/projection/: the joint query-key embedding (AttentionViz) of every
head of the tiny Llama fixture (grouped-query attention: 4 query heads over 2 key heads) over
the first sentences of the default corpus, with its PCA, computed with numpy in float64 from the
queries and keys Hugging Face transformers captures; and the trustworthiness scikit-learn
measures for PCA, scikit-learn's t-SNE and umap-learn's UMAP of one head, the bounds the tests
hold headwise's layouts to.

Run once by a developer (needs torch, transformers, tokenizers, safetensors, numpy,
scikit-learn, umap-learn), after scripts/make_fixtures.py; never at test time.
Usage: python3 scripts/make_projection_fixtures.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import sklearn
import torch
import transformers
import umap
from safetensors.numpy import save_file
from sklearn.manifold import TSNE, trustworthiness
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_fixtures import llama_trace  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "tiny-llama"
OUT = ROOT / "tests" / "fixtures" / "projection"
CORPUS = ROOT / "assets" / "corpus" / "moby-dick.txt"
SENTENCES = 10
MAX_TOKENS = 60
NEIGHBOURS = 5
LAYOUT_HEAD = (1, 2)


def joint(q, k):
    """AttentionViz's normalisation: keys centred on the queries' mean, equal mean norms."""
    k = k - k.mean(0) + q.mean(0)
    c = np.sqrt(np.linalg.norm(k, axis=1).mean() / np.linalg.norm(q, axis=1).mean())
    return np.concatenate([q * c, k / c])


def pca(x, dims):
    """Centred PCA; each component's largest loading made positive (scikit-learn's svd_flip)."""
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:dims]
    signs = np.sign(vt[np.arange(dims), np.abs(vt).argmax(1)])
    return x @ (vt * signs[:, None]).T


def main():
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(MODEL, attn_implementation="eager").eval()
    cfg = model.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    texts, traces = [], []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        ids = tok.encode(line).ids
        if len(ids) <= MAX_TOKENS:
            texts.append(line)
            traces.append(llama_trace(model, torch.tensor([ids])))
        if len(texts) == SENTENCES:
            break
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tensors, meta = {}, {"texts": len(texts), "transformers": transformers.__version__,
                          "torch": torch.__version__, "sklearn": sklearn.__version__,
                          "umap": umap.__version__, "neighbours": NEIGHBOURS}
    for layer in range(cfg.num_hidden_layers):
        for head in range(cfg.num_attention_heads):
            q = np.concatenate([t[f"q/{layer}"][head].double().numpy() for t in traces])
            k = np.concatenate([t[f"k/{layer}"][head // group].double().numpy() for t in traces])
            x = joint(q, k)
            tensors[f"joint/{layer}/{head}"] = x.astype(np.float32)
            for dims in (2, 3):
                tensors[f"pca{dims}/{layer}/{head}"] = pca(x, dims).astype(np.float32)
    layer, head = LAYOUT_HEAD
    x = tensors[f"joint/{layer}/{head}"]
    layouts = {
        "pca": tensors[f"pca2/{layer}/{head}"],
        "tsne": TSNE(n_components=2, random_state=0).fit_transform(x),
        "umap": umap.UMAP(n_components=2, random_state=0, init="pca").fit_transform(x),
    }
    meta["layout_head"] = list(LAYOUT_HEAD)
    meta["points"] = int(x.shape[0])
    meta["trustworthiness"] = {name: float(trustworthiness(x, y, n_neighbors=NEIGHBOURS))
                               for name, y in layouts.items()}
    save_file(tensors, str(OUT / "expected.safetensors"), metadata={"fixture": json.dumps(meta)})
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
