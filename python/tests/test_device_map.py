"""A model dispatched with accelerate's device_map over two groups (the second offloaded, so
its weights arrive through accelerate's hooks as each layer runs) gives the same session as
the model in one piece."""
import numpy as np
import pytest

import headwise
from conftest import PROMPTS, fixture, tokenizer_of

accelerate = pytest.importorskip("accelerate")


def test_a_model_split_over_two_device_map_groups_gives_the_unsplit_session(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = fixture("tiny-llama")
    tok = tokenizer_of(folder)
    whole = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    split_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                 "model.layers.1": "disk", "model.norm": "disk", "lm_head": "disk"}
    split = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", device_map=split_map,
                                                 offload_folder=str(tmp_path / "offload")).eval()
    assert set(split.hf_device_map.values()) == {"cpu", "disk"}
    assert hasattr(split.model.layers[1], "_hf_hook"), "layer 1 runs through accelerate's hook"

    a = headwise.capture(whole, PROMPTS, tokenizer=tok, out=tmp_path / "whole.safetensors", attention="full")
    b = headwise.capture(split, PROMPTS, tokenizer=tok, out=tmp_path / "split.safetensors", attention="full")
    assert a.meta["inputs"] == b.meta["inputs"]
    assert a.model["attention"] == b.model["attention"]
    assert a.keys() == b.keys()
    for name in a.keys():
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
