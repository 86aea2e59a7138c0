#!/usr/bin/env python3
"""Generation speed on the CPU, in one run: transformers' greedy `generate` (eager attention,
float32, KV cache, torch on all cores) and `headwise bench generate` on the same SmolLM2 GGUF
file and prompt, new tokens per second each (median of warm runs after a warm-up), and their
ratio.

Usage: python3 scripts/bench_generate.py --headwise PATH [--tokens 32] [--runs 3]
                                         [--models DIR]  (DIR holds smollm2/ as fetched)
"""
import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is"


def transformers_rate(folder, tokens, runs):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = LlamaForCausalLM.from_pretrained(folder, gguf_file=GGUF, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    rates = []
    with torch.no_grad():
        model.generate(ids, max_new_tokens=tokens, do_sample=False)
        for _ in range(runs):
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
            new = out.shape[1] - ids.shape[1]
            rates.append(new / (time.perf_counter() - start))
    return statistics.median(rates), new, torch.get_num_threads()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headwise", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default=os.path.expanduser("~/.cache/headwise/models"))
    args = ap.parse_args()
    reference, new, threads = transformers_rate(Path(args.models) / "smollm2", args.tokens, args.runs)
    out = subprocess.run([args.headwise, "bench", "generate", "--model", "smollm2", "--device", "cpu",
                          "--tokens", str(args.tokens), "--runs", str(args.runs), "--prompt", PROMPT],
                         capture_output=True, text=True, check=True)
    ours = json.loads(out.stdout)
    print(json.dumps({
        "prompt": PROMPT,
        "transformers_tokens_per_s": round(reference, 2),
        "transformers_new_tokens": new,
        "torch_threads": threads,
        "headwise_tokens_per_s": round(ours["tokens_per_s"], 2),
        "headwise_new_tokens": ours["new_tokens"],
        "headwise_kv_cache": ours["kv_cache"],
        "headwise_over_transformers": round(ours["tokens_per_s"] / reference, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
