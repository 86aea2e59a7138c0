#!/usr/bin/env python3
"""Gradient attribution speed on the CPU, in one run: PyTorch autograd and
`headwise bench gradients` doing the same work, one forward plus one backward pass giving the
head importance |dtarget/dxi|, dtarget/dA * A for every layer and Chefer's relevance map (the
definitions, target and code are those of scripts/make_gradient_fixtures.py, imported from it),
on
  (a) real SmolLM2 (the GGUF file, dequantised by transformers as bench_generate.py loads it,
      eager attention, float32) on a 128-token English text: a fixed paragraph repeated and cut
      to exactly 128 tokens with the model's tokenizer (target: the most likely next token);
  (b) real DINOv2-S (Dinov2Model from the dinov2-s folder's config.json and model.safetensors,
      eager attention, float32) on assets/chelsea.png with ImageNet preprocessing (shortest
      edge resized to 256, bicubic; centre crop 224 x 224; ImageNet mean and std), 257 tokens
      (target: the CLS output's dot product with its most similar first-layer input).
Each side: the median of --runs warm runs after one warm-up. headwise is run as
`HEADWISE bench gradients --model smollm2 --device cpu --tokens 128 --runs R` and
`HEADWISE bench gradients --model dinov2-s --device cpu --image-size 224 --runs R`,
each printing one JSON object with at least {"seconds": median seconds, "tokens": T}.
The summary (JSON on stdout) gives per model torch_seconds, headwise_seconds and
headwise_speedup_over_torch = torch_seconds / headwise_seconds (above 1: headwise is faster),
and torch's thread count.

Usage: python3 scripts/bench_gradients.py [--headwise PATH] [--runs 3] [--models DIR]
                                          [--torch-only]
where DIR (default ~/.cache/headwise/models) holds smollm2/ and dinov2-s/ as fetched, PATH
defaults to $HEADWISE_BIN or target/release/headwise, and --torch-only skips headwise.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_gradient_fixtures import EMBEDDING, TOKEN, attribute  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE = ROOT / "assets" / "chelsea.png"
TOKENS = 128
PARAGRAPH = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
             "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
             "see the watery part of the world. It is a way I have of driving off the spleen and regulating the "
             "circulation. ")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def smollm2(folder):
    """(model, its layer list, inputs): the 128-token text."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = LlamaForCausalLM.from_pretrained(folder, gguf_file=GGUF, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    text = PARAGRAPH
    while len(tok(text).input_ids) < TOKENS:
        text += PARAGRAPH
    ids = tok(text).input_ids[:TOKENS]
    print(f"smollm2: the text is {len(ids)} tokens ({len(PARAGRAPH)}-character paragraph repeated and cut)",
          file=sys.stderr)
    return model, model, model.model.layers, {"input_ids": torch.tensor([ids])}


def imagenet_pixels(path, size=224, resize=256):
    """[1, 3, size, size]: shortest edge to `resize` (bicubic), centre crop, ImageNet mean/std."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()


def dinov2(folder):
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    return model, model, model.encoder.layer, {"pixel_values": imagenet_pixels(IMAGE)}


def time_torch(model, tower, layers, inputs, kind, runs):
    """Median seconds of `runs` warm runs (after one warm-up) of the forward + backward pass giving
    importance, grad x attention for every layer and the relevance map; and T."""
    model.requires_grad_(False)  # only the gates (and attention) need gradients, as in headwise
    res = attribute(model, tower, layers, inputs, kind)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        res = attribute(model, tower, layers, inputs, kind)
        times.append(time.perf_counter() - start)
    assert len(res["grad_attn"]) == len(layers) and res["relevance"].shape == (res["tokens"],)
    return statistics.median(times), res["tokens"]


def time_headwise(headwise, args):
    out = subprocess.run([headwise, "bench", "gradients", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headwise", default=os.environ.get("HEADWISE_BIN", str(ROOT / "target" / "release" / "headwise")))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/headwise/models"))
    ap.add_argument("--torch-only", action="store_true", help="time PyTorch only (no headwise run)")
    args = ap.parse_args()
    runs = str(args.runs)
    cases = [
        ("smollm2", smollm2, TOKEN, ["--model", "smollm2", "--device", "cpu", "--tokens", str(TOKENS), "--runs", runs]),
        ("dinov2-s", dinov2, EMBEDDING, ["--model", "dinov2-s", "--device", "cpu", "--image-size", "224",
                                         "--runs", runs]),
    ]
    summary = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "runs": args.runs}
    for name, load, kind, headwise_args in cases:
        model, tower, layers, inputs = load(Path(args.models) / name)
        seconds, tokens = time_torch(model, tower, layers, inputs, kind, args.runs)
        row = {"tokens": tokens, "layers": len(layers), "torch_seconds": round(seconds, 4)}
        print(f"{name}: torch {seconds:.3f} s at {tokens} tokens", file=sys.stderr)
        del model, tower, layers
        if not args.torch_only:
            ours = time_headwise(args.headwise, headwise_args)
            row.update({"headwise_seconds": round(ours["seconds"], 4), "headwise_tokens": ours["tokens"],
                        "headwise_speedup_over_torch": round(seconds / ours["seconds"], 2)})
            if ours["tokens"] != tokens:
                print(f"{name}: headwise ran {ours['tokens']} tokens, torch {tokens}", file=sys.stderr)
        summary[name] = row
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
