#!/usr/bin/env python3
"""Forward + attention capture: headwise against Hugging Face transformers, in one run.

For each model and length, transformers (eager attention, output_attentions=True, no_grad,
float32) and `headwise bench trace` run on the same machine, one after the other, on the same
text cut to the same number of tokens (image models: the same photograph resized to the same
square size); the table gives both medians and their ratio.

Usage: python3 scripts/bench_compare.py [--headwise PATH] [--device cpu|gpu|auto] [--runs R]
                                       [--models minilm,smollm2,dinov2-s] [--tokens 32,128,512]
                                       [--attention full|auto|none]
The real models are fetched on first use (`headwise models fetch NAME`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, BertModel, LlamaForCausalLM

TEXT = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
        "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
        "see the watery part of the world. It is a way I have of driving off the spleen and regulating the "
        "circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly "
        "November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and "
        "bringing up the rear of every funeral I meet; then, I account it high time to get to sea as soon "
        "as I can. ")


def model_path(headwise, name):
    out = subprocess.run([headwise, "models", "fetch", name], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def load_hf(name, path):
    if name == "dinov2-s":
        from transformers import Dinov2Model
        return None, Dinov2Model.from_pretrained(path, attn_implementation="eager").eval()
    if name == "minilm":
        tok = AutoTokenizer.from_pretrained(path)
        model = BertModel.from_pretrained(path, attn_implementation="eager", add_pooling_layer=False)
    else:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name, attn_implementation="eager",
                                                 dtype=torch.float32)
    return tok, model.eval()


def time_hf(tok, model, tokens, runs):
    text = TEXT
    while len(tok(text).input_ids) < tokens:
        text += TEXT
    ids = torch.tensor([tok(text).input_ids[:tokens]])
    with torch.no_grad():
        model(input_ids=ids, output_attentions=True)  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = model(input_ids=ids, output_attentions=True)
            _ = [a.sum().item() for a in out.attentions[:1]]
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_hf_image(model, size, runs):
    """The sample photograph resized (bicubic) to size x size and normalised, as headwise's bench
    does; the values do not change the time, the shape does."""
    from PIL import Image
    picture = Image.open(Path(__file__).resolve().parent.parent / "assets" / "chelsea.png").convert("RGB")
    import numpy as np
    square = np.asarray(picture.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    pixels = torch.from_numpy(square).permute(2, 0, 1).unsqueeze(0) / 255.0
    with torch.no_grad():
        model(pixel_values=pixels, output_attentions=True)  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = model(pixel_values=pixels, output_attentions=True)
            _ = [a.sum().item() for a in out.attentions[:1]]
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_headwise(headwise, name, tokens, device, runs, image_size=None, attention="full"):
    size = ["--image-size", str(image_size)] if image_size else ["--tokens", str(tokens)]
    out = subprocess.run([headwise, "bench", "trace", "--model", name, *size, "--attention", attention,
                          "--device", device, "--runs", str(runs)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headwise", default=os.environ.get("HEADWISE_BIN", "target/release/headwise"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default="minilm,smollm2")
    ap.add_argument("--tokens", default="32,128,512")
    ap.add_argument("--image-sizes", default="224,448")
    ap.add_argument("--attention", default="full",
                    help="headwise's capture: full (materialised, as output_attentions), auto or none")
    args = ap.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}",
          file=sys.stderr)
    rows = []
    for name in args.models.split(","):
        tok, model = load_hf(name, model_path(args.headwise, name))
        if tok is None:
            for size in [int(s) for s in args.image_sizes.split(",")]:
                hf = time_hf_image(model, size, args.runs)
                ours = time_headwise(args.headwise, name, None, args.device, args.runs, image_size=size)
                label = f"{ours['tokens']} ({size} px)"
                rows.append((name, label, ours["device"], ours["median_ms"], hf, hf / ours["median_ms"]))
                print(f"{name} {size} px: headwise {ours['median_ms']:.1f} ms, transformers {hf:.1f} ms",
                      file=sys.stderr)
            continue
        for tokens in [int(t) for t in args.tokens.split(",")]:
            hf = time_hf(tok, model, tokens, args.runs)
            ours = time_headwise(args.headwise, name, tokens, args.device, args.runs, attention=args.attention)
            rows.append((name, tokens, ours["device"], ours["median_ms"], hf, hf / ours["median_ms"]))
            print(f"{name} {tokens}: headwise {ours['median_ms']:.1f} ms, transformers {hf:.1f} ms", file=sys.stderr)
    print("| model | tokens | headwise device | headwise median ms | transformers median ms | speed-up (transformers / headwise) |")
    print("|---|---:|---|---:|---:|---:|")
    for name, tokens, device, ours, hf, ratio in rows:
        print(f"| {name} | {tokens} | {device} | {ours:.1f} | {hf:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
