"""capture's per-layer value norms (`vnorm`), hidden-state norms (`norms`) and massive
activations (`massive`) equal transformers' references in the fixtures' extreme.safetensors
(scripts/make_extreme_token_fixtures.py), on the same inputs."""
import json

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

import headwise
from conftest import fixture

REL = 1e-5


def reference(name):
    with safe_open(str(fixture(name) / "extreme.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["fixture"])


def inputs_of(name, meta):
    if "token_ids" in meta:
        return [torch.tensor([ids]) for ids in meta["token_ids"]]
    with safe_open(str(fixture(name) / "expected.safetensors"), "pt") as f:
        return [f.get_tensor("pixels").unsqueeze(0)]


def assert_relative(actual, expected, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    worst = float((np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-6)).max())
    assert worst <= REL, f"{what}: differs by up to {worst:.3g} relative (tolerance {REL})"


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert", "tiny-vit"])
def test_vnorm_norms_and_massive_equal_the_transformers_references(name, tmp_path):
    expected, meta = reference(name)
    model = getattr(transformers, meta["model_class"]).from_pretrained(
        fixture(name), attn_implementation="eager", dtype=torch.float32).eval()
    inputs = inputs_of(name, meta)
    s = headwise.capture(model, inputs, out=tmp_path / "s.safetensors", attention="none")
    names = set(s.keys())
    for i in range(len(inputs)):
        for layer in range(s.layers):
            for kind in ("vnorm", "norms"):
                key = f"{kind}/{i}/{layer}"
                assert key in names, f"{key} not written"
                assert_relative(s[key], expected[key], key)
            key = f"massive/{i}/{layer}"
            got, want = np.asarray(s[key]), expected[key]
            assert got.shape == (16, 3)
            assert np.array_equal(got[:, :2], want[:, :2]), f"{key}: tokens/channels {got[:, :2]} vs {want[:, :2]}"
            assert_relative(got[:, 2], want[:, 2], key)
    assert not any(k.startswith(("vnorm/", "norms/", "massive/")) and int(k.split("/")[1]) >= len(inputs)
                   for k in names)


def test_massive_orders_ties_by_flat_index_and_pads_small_states():
    from headwise._capture import _massive

    h = torch.tensor([[1.0, -3.0], [3.0, 0.0]])
    rows = _massive(h)
    assert rows.shape == (16, 3)
    assert rows[:4].tolist() == [[0, 1, -3], [1, 0, 3], [0, 0, 1], [1, 1, 0]]
    assert (rows[4:] == np.array([-1, -1, 0], np.float32)).all()
