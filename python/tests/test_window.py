"""The real window under Xvfb opens sessions the Python package captured: a tiny Llama's and a
Whisper encoder's (a family the native engine does not run), stored without attention so the
window draws it from q, k and lse. Skipped where xvfb-run is missing unless
HEADWISE_REQUIRE_WINDOW=1 (CI sets it)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import headwise
from conftest import PROMPTS, fixture, tokenizer_of
from test_other_families import whisper_session


def xvfb_run():
    found = shutil.which("xvfb-run")
    if found:
        return found
    if os.environ.get("HEADWISE_REQUIRE_WINDOW") == "1":
        pytest.fail("HEADWISE_REQUIRE_WINDOW=1 but xvfb-run is not installed")
    pytest.skip("xvfb-run is not installed")


def screenshot(binary, session, tmp_path):
    shot = tmp_path / "window.png"
    out = subprocess.run(["timeout", "300", xvfb_run(), "-a", "-s", "-screen 0 1400x900x24", binary,
                          str(session), "--screenshot", str(shot)],
                         capture_output=True, text=True, env={**os.environ, "HEADWISE_HOME": str(tmp_path)})
    assert out.returncode == 0, f"the window failed:\n{out.stdout}\n{out.stderr}"
    from PIL import Image

    return np.asarray(Image.open(shot).convert("RGB")), out


def colours(img):
    return len(np.unique(img.reshape(-1, 3), axis=0))


def test_the_window_opens_a_captured_decoder_session(headwise_bin, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fixture("tiny-llama"), attn_implementation="eager").eval()
    s = headwise.capture(model, PROMPTS, tokenizer=tokenizer_of(fixture("tiny-llama")),
                         out=tmp_path / "llama.safetensors")
    img, out = screenshot(headwise_bin, s.path, tmp_path)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000
    assert colours(img) > 50, "the overview's heatmaps are on screen"
    assert "session file" not in out.stderr, out.stderr


def test_the_window_opens_a_whisper_session_without_stored_attention(headwise_bin, tmp_path):
    s, _ = whisper_session(tmp_path / "whisper.safetensors", attention="none")
    img, out = screenshot(headwise_bin, s.path, tmp_path)
    assert colours(img) > 50, "the overview's heatmaps are on screen"
    assert "session file" not in out.stderr, out.stderr
