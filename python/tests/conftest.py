"""Shared helpers for the headwise Python tests: the repository's tiny fixtures, the headwise
binary (`HEADWISE_BIN`, else the debug build under `CARGO_TARGET_DIR` or `target/`), and
`headwise trace` runs to compare with."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and the heads know it.",
]


def fixture(name):
    return FIXTURES / name


def find_binary():
    named = os.environ.get("HEADWISE_BIN")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"HEADWISE_BIN={named} is not an executable")
        return named
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    built = target / "debug" / "headwise"
    if built.exists():
        return str(built)
    if os.environ.get("HEADWISE_REQUIRE_BIN") == "1":
        pytest.fail(f"HEADWISE_REQUIRE_BIN=1 but there is no headwise binary at {built}")
    pytest.skip(f"no headwise binary (build it with `cargo build -p headwise`; looked at {built})")


@pytest.fixture(scope="session")
def headwise_bin():
    return find_binary()


def run(binary, *args, env=None, timeout=600):
    """Runs the headwise binary; a failure shows its output."""
    out = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, f"headwise {' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}"
    return out


def trace(binary, model_dir, out, texts=(), images=()):
    args = ["trace", "--model", model_dir, "--device", "cpu", "--out", out]
    for t in texts:
        args += ["--text", t]
    for i in images:
        args += ["--image", i]
    run(binary, *args)
    return out


def tokenizer_of(model_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(model_dir) / "tokenizer.json"))


def assert_close(actual, expected, tol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    worst = float(np.abs(actual - expected).max()) if actual.size else 0.0
    assert worst <= tol, f"{what}: differs by up to {worst:.3g} (tolerance {tol})"
