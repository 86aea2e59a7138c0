"""The Rust engine opens sessions the Python package writes: `headwise render` draws a captured
tiny Llama's and a captured Whisper encoder's (a family the engine does not run itself), the
Whisper one stored without attention, so drawn from q, k and lse; a session of attention only
(no q or k) draws its heads, and its query-key view says why it is empty."""
import numpy as np
import pytest

import headwise
from conftest import PROMPTS, fixture, run, tokenizer_of
from test_other_families import whisper_session


def colours(png):
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("attention", ["full", "none"])
def test_the_engine_draws_a_captured_whisper_session(attention, headwise_bin, tmp_path):
    s, _ = whisper_session(tmp_path / "whisper.safetensors", attention=attention)
    for view in ("overview", "head:1.2"):
        png = tmp_path / f"{view.replace(':', '-')}.png"
        run(headwise_bin, "render", s.path, "--view", view, "--out", png)
        assert colours(png) > 20, f"{view} draws a heatmap"


def test_the_engine_draws_a_session_without_attention_as_it_draws_the_stored_one(headwise_bin, tmp_path):
    """Rows rebuilt by the engine from q, k and lse (format 2 without attn tensors) draw the
    same heatmap as the attention transformers returned."""
    from PIL import Image

    pictures = {}
    for attention in ("full", "none"):
        s, _ = whisper_session(tmp_path / f"{attention}.safetensors", attention=attention)
        assert s.has_attention(0) == (attention == "full")
        png = tmp_path / f"{attention}.png"
        run(headwise_bin, "render", s.path, "--view", "head:1.2", "--out", png)
        pictures[attention] = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pictures["full"].shape == pictures["none"].shape
    assert np.abs(pictures["full"] - pictures["none"]).max() <= 1, "the same colours, to a rounding step"


def test_the_engine_draws_a_captured_decoder_session(headwise_bin, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fixture("tiny-llama"), attn_implementation="eager").eval()
    s = headwise.capture(model, PROMPTS, tokenizer=tokenizer_of(fixture("tiny-llama")),
                         out=tmp_path / "llama.safetensors")
    png = tmp_path / "head.png"
    run(headwise_bin, "render", s.path, "--view", "head:1.3", "--input", "1", "--out", png)
    assert colours(png) > 20


def test_a_session_of_attention_only_draws_its_heads_and_the_query_key_view_says_why_it_is_empty(
        headwise_bin, tmp_path):
    """A model whose attention modules the capture does not know gives attention without q and
    k: the engine draws its heads, and the query-key view is refused with the reason rather
    than a layout of nothing."""
    import subprocess

    import torch
    from test_other_families import HandWrittenAttention

    s = headwise.capture(HandWrittenAttention().eval(), torch.tensor([[1, 2, 3, 4, 5]]),
                         out=tmp_path / "hand.safetensors", attention="none")
    png = tmp_path / "head.png"
    run(headwise_bin, "render", s.path, "--view", "head:1.1", "--out", png)
    assert colours(png) > 5
    out = subprocess.run([headwise_bin, "render", s.path, "--view", "qk:0.0", "--out",
                          tmp_path / "qk.png"], capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "panicked" not in out.stderr
    assert "attention only" in out.stderr and "queries and keys" in out.stderr, out.stderr
    assert not (tmp_path / "qk.png").exists()
