"""The head scores `headwise metrics` reports (and the overview colours by) equal a numpy
reference computed from the same session's tensors, raw and value-weighted; and the
value-weighted attention it computes equals alpha_ij * |v_j| renormalised per row.

The definitions are the README's (and `HeadMetric::definition`): means over query rows of the
head's attention row a_i."""
import json

import numpy as np
import pytest

import headwise
from conftest import fixture, run, trace

TOL = 1e-5
EPSILON = 0.3
SINK_TOKENS, RECENT = 4, 64
TEXTS = ["the quick brown fox jumps over the lazy dog and the cat sat on the mat again",
         "Paris is the capital of France"]


def reference_metrics(attn, value_norms, special):
    """Every metric of one head of a causal layer (the fixture is a decoder without a window)
    from its [T, T] attention, its value norms [T] (or None) and the special-token mask, as
    numpy computes them."""
    t = attn.shape[0]
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(attn > 0, attn * np.log(np.where(attn > 0, attn, 1)), 0)
    out = {
        "entropy": -plogp.sum(1).mean(),
        "distance": (attn * np.abs(i - j)).sum(1).mean(),
        "previous": np.mean([attn[r, r - 1] for r in range(1, t)]) if t > 1 else 0.0,
        "sink": attn[:, 0].mean(),
        "self": np.diag(attn).mean(),
        "special": attn[:, special].sum(1).mean(),
        "secondary-sink": (attn.sum(0) / t)[1:].max() if t > 1 else 0.0,
    }
    if value_norms is None:
        out["dormancy"] = None
    else:
        rows = []
        for r in range(t):
            mean = value_norms[:r + 1].mean()  # the keys a causal query sees
            moved = (attn[r] * value_norms).sum()
            if mean > 0:
                rows.append(max(0.0, 1 - moved / mean))
        out["dormancy"] = np.sum(rows) / t
    long_rows = [r for r in range(t) if r >= SINK_TOKENS + RECENT]
    if long_rows:
        near = (j < SINK_TOKENS) | (np.abs(i - j) < RECENT)
        out["streaming"] = np.mean([(attn[r] * near[r]).sum() for r in long_rows])
    else:
        out["streaming"] = None
    return out


def weighted(attn, norms, heads, kv_heads):
    """alpha_ij * |v_j| renormalised per row, per head (head h reads key head h // group)."""
    group = heads // kv_heads
    out = np.empty_like(attn)
    for h in range(heads):
        moved = attn[h] * norms[h // group][None, :]
        out[h] = moved / moved.sum(1, keepdims=True)
    return out


@pytest.fixture(scope="module")
def traced(headwise_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scores")
    path = trace(headwise_bin, fixture("tiny-llama"), folder / "s.safetensors", texts=TEXTS)
    outputs = {}
    for weighting in ("raw", "weighted"):
        extra = ["--value-weighted"] if weighting == "weighted" else []
        js, at = folder / f"{weighting}.json", folder / f"{weighting}-attn.safetensors"
        run(headwise_bin, "metrics", path, "--json", js, "--write-attention", at, *extra)
        outputs[weighting] = (json.loads(js.read_text()), at)
    return headwise.load(path), outputs


@pytest.mark.parametrize("weighting", ["raw", "weighted"])
def test_head_scores_equal_a_numpy_reference(traced, weighting):
    session, outputs = traced
    reported, _ = outputs[weighting]
    heads, kv_heads = session.model["heads"], session.model["kv_heads"]
    for index, info in enumerate(session.inputs):
        t = len(info["tokens"])
        special = np.zeros(t, bool)
        special[info.get("special_tokens", [])] = True
        for layer in range(session.layers):
            attn = session.attention(layer, index)
            norms = session[f"vnorm/{index}/{layer}"]
            if weighting == "weighted":
                attn = weighted(attn, norms, heads, kv_heads)
            for h in range(heads):
                want = reference_metrics(attn[h], norms[h // (heads // kv_heads)], special)
                for name, value in want.items():
                    got = reported["inputs"][index]["metrics"][name][layer][h]
                    if value is None:
                        assert got is None, f"{name} L{layer}.H{h}: {got}"
                    else:
                        assert abs(got - value) <= TOL * max(1.0, abs(value)), \
                            f"input {index} {weighting} {name} L{layer}.H{h}: {got} vs numpy {value}"
        sinks = [reported["inputs"][index]["metrics"]["sink"][l][h] > EPSILON
                 for l in range(session.layers) for h in range(heads)]
        assert abs(reported["inputs"][index]["sink_rate"] - np.mean(sinks)) < 1e-6


def test_value_weighted_attention_equals_attention_times_value_norm_renormalised(traced):
    from safetensors.numpy import load_file

    session, outputs = traced
    written = load_file(str(outputs["weighted"][1]))
    raw = load_file(str(outputs["raw"][1]))
    heads, kv_heads = session.model["heads"], session.model["kv_heads"]
    for index in range(len(session.inputs)):
        for layer in range(session.layers):
            attn = session.attention(layer, index)
            np.testing.assert_allclose(raw[f"attn/{index}/{layer}"], attn, atol=1e-6)
            want = weighted(attn, session[f"vnorm/{index}/{layer}"], heads, kv_heads)
            np.testing.assert_allclose(written[f"attn/{index}/{layer}"], want, atol=TOL)


def test_streaming_and_retrieval_scores_of_a_probe_equal_a_numpy_reference(headwise_bin, tmp_path):
    """A needle probe long enough for the streaming score (rows past 68), on the tiny Llama 3
    with its positions raised: both scores as numpy computes them from the session."""
    import shutil

    model = tmp_path / "tiny-llama3-long"
    shutil.copytree(fixture("tiny-llama3"), model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 4096
    (model / "config.json").write_text(json.dumps(config))
    path = tmp_path / "probe.safetensors"
    run(headwise_bin, "probe", "retrieval", "--model", model, "--tokens", "400", "--device", "cpu",
        "--out", path)
    js = tmp_path / "probe.json"
    run(headwise_bin, "metrics", path, "--json", js)
    reported = json.loads(js.read_text())["inputs"][0]["metrics"]
    session = headwise.load(path)
    info = session.inputs[0]
    ids, probe = info["token_ids"], info["probe"]
    t = len(ids)
    assert t > SINK_TOKENS + RECENT
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    near = (j < SINK_TOKENS) | (np.abs(i - j) < RECENT)
    needle = range(*probe["needle"])
    stored = session["retrieval/0"]
    for layer in range(session.layers):
        attn = session.attention(layer, 0)
        for h in range(session.heads):
            streaming = (attn[h] * near)[SINK_TOKENS + RECENT:].sum(1).mean()
            got = reported["streaming"][layer][h]
            assert abs(got - streaming) <= TOL, f"streaming L{layer}.H{h}: {got} vs {streaming}"
            answer = [p for p in range(*probe["answer"]) if p > 0]
            hits = sum(1 for p in answer
                       if (k := int(np.argmax(attn[h, p - 1]))) in needle and ids[k] == ids[p])
            retrieval = hits / len(answer)
            assert abs(reported["retrieval"][layer][h] - retrieval) <= 1e-6, f"retrieval L{layer}.H{h}"
            assert abs(stored[layer, h] - retrieval) <= 1e-6
