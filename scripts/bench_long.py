#!/usr/bin/env python3
"""Long context on the CPU, in one run: `headwise trace --text-file` of a long document at N
tokens (wall time, peak memory from /usr/bin/time -v, session size), then `headwise render` of
the overview and of one head of that session (time, peak memory), and `headwise bench trace` (one
warm forward pass with capture, after a warm-up), against transformers' own
forward pass at the same length (sdpa attention, no attention output: the speed reference), whose
time and peak memory are measured in a child process the same way. Eager attention with
`output_attentions` at that length would need layers x heads x T^2 x 4 bytes for the attention
alone; the table says how much.

Usage: python3 scripts/bench_long.py --headwise PATH [--tokens 8192] [--model smollm2]
                                     [--head 29.2] [--out DIR]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = ("Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
        "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
        "see the watery part of the world. It is a way I have of driving off the spleen and regulating the "
        "circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly "
        "November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and "
        "bringing up the rear of every funeral I meet; then, I account it high time to get to sea as soon "
        "as I can. ")

HF_CHILD = r'''
import sys, time, torch
from pathlib import Path
from transformers import AutoTokenizer, LlamaForCausalLM
path, text_file, tokens = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
model = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name, attn_implementation="sdpa",
                                         dtype=torch.float32).eval()
ids = torch.tensor([tok(open(text_file).read()).input_ids[:tokens]])
assert ids.shape[1] == tokens, ids.shape
with torch.no_grad():
    start = time.perf_counter()
    out = model(input_ids=ids, use_cache=False)
    out.logits[0, -1].sum().item()
    print(time.perf_counter() - start)
'''


def timed(cmd):
    """Runs cmd under /usr/bin/time -v: (wall seconds, peak RSS bytes, stdout)."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) * 1024
    return seconds, peak, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--headwise", default=os.environ.get("HEADWISE_BIN", "target/debug/headwise"))
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--head", default="29.2")
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="headwise-long-"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(subprocess.run([args.headwise, "models", "fetch", args.model], check=True,
                                capture_output=True, text=True).stdout.strip())
    text = TEXT * (args.tokens // 60 + 10)
    doc = out / "document.txt"
    doc.write_text(text)
    session = out / "long.safetensors"
    rows = []
    t, peak, _ = timed([args.headwise, "trace", "--model", args.model, "--text-file", str(doc),
                        "--truncate", "--device", "cpu", "--out", str(session)])
    meta = json.loads(subprocess.run(
        [sys.executable, "-c", "import json,sys; from safetensors import safe_open\n"
         "f = safe_open(sys.argv[1], 'np'); print(f.metadata()['headwise'])", str(session)],
        check=True, capture_output=True, text=True).stdout)
    tokens = len(meta["inputs"][0]["tokens"])
    layers, heads = meta["model"]["layers"], meta["model"]["heads"]
    rows.append(("headwise trace (q, k, lse)", tokens, t, peak, session.stat().st_size))
    print(f"trace: {tokens} tokens, {t:.1f} s, peak {peak >> 20} MiB", file=sys.stderr)
    for view in ["overview", f"head:{args.head}"]:
        png = out / (view.replace(":", "-") + ".png")
        t, peak, _ = timed([args.headwise, "render", str(session), "--view", view, "--out", str(png)])
        rows.append((f"headwise render {view}", tokens, t, peak, png.stat().st_size))
        print(f"render {view}: {t:.1f} s, peak {peak >> 20} MiB", file=sys.stderr)
    bench = json.loads(subprocess.run(
        [args.headwise, "bench", "trace", "--model", args.model, "--tokens", str(tokens), "--runs", "1",
         "--attention", "auto", "--device", "cpu"], check=True, capture_output=True, text=True).stdout)
    forward_ours = bench["median_ms"] / 1e3
    rows.append(("headwise forward + capture (q, k, lse; `bench trace`)", tokens, forward_ours,
                 bench["peak_memory_bytes"], None))
    print(f"headwise forward: {forward_ours:.1f} s", file=sys.stderr)
    child = out / "hf_forward.py"
    child.write_text(HF_CHILD)
    t, peak, stdout = timed([sys.executable, str(child), str(model), str(doc), str(tokens)])
    forward = float(stdout.strip().splitlines()[-1])
    rows.append(("transformers forward (sdpa, no attention output)", tokens, forward, peak, None))
    print(f"transformers: forward {forward:.1f} s (process {t:.1f} s), peak {peak >> 20} MiB", file=sys.stderr)
    eager = layers * heads * tokens * tokens * 4
    print("| what | tokens | seconds | peak memory | output |")
    print("|---|---:|---:|---:|---:|")
    for what, n, secs, peak, size in rows:
        size = "" if size is None else f"{size / 2**20:.1f} MiB"
        print(f"| {what} | {n} | {secs:.1f} | {peak / 2**30:.2f} GiB | {size} |")
    print(f"\nEager attention with output_attentions at {tokens} tokens would hold "
          f"{eager / 2**30:.1f} GiB of attention ({layers} layers x {heads} heads x T^2 x 4 bytes).")
    hf = rows[-1][2]
    print(f"headwise forward + capture / transformers forward: {forward_ours / hf:.2f}x the time; "
          f"the whole `headwise trace` (loading, tokenising, writing the session): {rows[0][2] / hf:.2f}x.")


if __name__ == "__main__":
    main()
