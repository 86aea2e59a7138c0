#!/usr/bin/env python3
"""Generates reference tensors for *edited* forward passes (head ablations and attention
scaling) and a greedy-generation reference, from Hugging Face transformers, so that the Rust
engine's interventions can be tested against them.

Run once by a developer, at fixture-generation time only; never at test time (the tests read
the files it writes). Needs torch, transformers, safetensors, gguf. Usage:

    python3 scripts/make_edit_fixtures.py [--real-models DIR] [--generate-threads N]

where DIR holds `smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` as `headwise models fetch` lays it
out (default ~/.cache/headwise/models; SmolLM2 is skipped when it is absent). It writes
`edits.safetensors` into tests/fixtures/tiny-llama/, tests/fixtures/tiny-gpt2/ and
tests/fixtures/real/smollm2/ and touches no other file.

Definitions (the contract the engine's edits are tested against):

- `ablate:L.H`: head H of layer L contributes nothing. Its attention output (the weighted
  values of that head: its slice of the input of the output projection, o_proj for Llama,
  attn.c_proj for GPT-2, before that projection) is zero. Done with a forward pre-hook on that
  projection that zeroes columns [H*head_dim, (H+1)*head_dim) of its input.
- `ablate-mean:L.H`: that slice is replaced by its mean over the input's tokens (the mean over
  the sequence dimension, per feature), with the same pre-hook.
- `scale:L.H:K=F`: in head H of layer L every query's attention to key position K is
  multiplied by F and the row renormalised, which is exactly adding ln F to logit(i, K) for
  every query i (F = 0 blocks the key). Done by wrapping the modeling module's
  `eager_attention_forward` (as python/headwise/_capture.py does): for the selected layers
  (module.layer_idx) the additive attention_mask [batch, 1 or heads, T, T] is expanded to
  [batch, heads, T, T] and ln F added at column K of the selected heads, every row.
  L and/or H may be `*` (every layer / every head), in ablations too.
  Several edits in one run are applied together; scale biases on the same cell add. F = 0 adds
  -inf; a cell the causal mask already hides stays hidden.

Every run uses eager attention, batch 1, on exactly the `token_ids` of the fixture's
expected.safetensors metadata. Per run it records what expected.safetensors holds, named
`{run}/{kind}/{prompt}/{layer}` (run = edit0, edit1, ...):
  attn/{p}/{l}  [heads, T, T]   the eager softmax output (the edited attention);
  q/{p}/{l}     [heads, T, d]   q as it enters the dot product (after RoPE, before the scale);
  k/{p}/{l}     [kv_heads, T, d];
  lse/{p}/{l}   [heads, T]      logsumexp of each row of eager's softmax input, i.e. the scaled,
                                masked logits INCLUDING the scale edits' ln F bias;
  next_token_probs/{p} [vocab]  softmax of the last position's logits (as `{run}/next_token_probs/{p}`).
For SmolLM2 q and k are left out and attn is kept only for the layers in metadata "attn_layers"
(lse and next_token_probs for all). The metadata key "fixture" is a JSON object with "runs"
(each run's list of edit strings, in order), "token_ids", "prompts", the library versions and,
for SmolLM2, "greedy" ([{"prompt_ids", "generated", ...}]: `model.generate(max_new_tokens=32,
do_sample=False)`, eos from the model's generation config, generated ids without the prompt;
prompt 0's ids, and "The capital of France is" as a user turn of the GGUF tokenizer's chat
template with the generation prompt, which brings SmolLM2's default system turn) and "generate_tokens_per_s" (a warm
32-token generate on the generating machine's CPU, with "generate_timing"). Those two timing
fields are the only ones that differ between two runs of this script; every tensor and every
other field is reproducible.
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
import transformers
from transformers import GPT2LMHeadModel, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import gpt2_trace, llama_trace  # noqa: E402  (the same capture as expected.safetensors)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_ATTN_LAYERS = [0, 3, 5, 29]
GREEDY_NEW_TOKENS = 32
CHAT_PROMPT = "The capital of France is"

TINY_RUNS = [["ablate:1.2"], ["ablate-mean:0.1"], ["scale:*.*:0=0.5"], ["scale:1.*:2=0"],
             ["ablate:1.2", "scale:*.*:0=0.5"]]
SMOL_RUNS = [["ablate:3.2"], ["ablate-mean:0.1"], ["scale:*.*:0=0.5"], ["scale:5.*:2=0"],
             ["ablate:3.2", "scale:*.*:0=0.5"]]


# ---------------------------------------------------------------------------------------------
# Edits


def parse_edit(text):
    """`ablate:L.H`, `ablate-mean:L.H` or `scale:L.H:K=F` -> dict; L, H may be `*` (None)."""
    kind, _, rest = text.partition(":")
    if kind in ("ablate", "ablate-mean"):
        where, extra = rest, None
    elif kind == "scale":
        where, _, extra = rest.partition(":")
    else:
        raise ValueError(f"unknown edit {text!r}")
    layer, _, head = where.partition(".")
    edit = {"kind": kind, "layer": None if layer == "*" else int(layer), "head": None if head == "*" else int(head)}
    if kind == "scale":
        key, _, factor = extra.partition("=")
        edit["key"], edit["factor"] = int(key), float(factor)
    return edit


def picks(value, count):
    return range(count) if value is None else [value]


class Edits:
    """Applies a list of edits to `model` while active (ablations by pre-hooks on the output
    projections, scaling by wrapping eager_attention_forward in the model's modeling modules)."""

    def __init__(self, model, texts):
        self.model = model
        self.edits = [parse_edit(t) for t in texts]
        self.hooks, self.patched = [], []

    def _layers(self):
        if hasattr(self.model, "transformer"):  # GPT-2
            return [blk.attn for blk in self.model.transformer.h], "c_proj"
        return [layer.self_attn for layer in self.model.model.layers], "o_proj"

    def __enter__(self):
        attns, proj = self._layers()
        cfg = self.model.config
        n_heads = cfg.num_attention_heads
        for e in self.edits:
            if e["kind"] == "scale":
                continue
            for l in picks(e["layer"], len(attns)):
                head_dim = attns[l].head_dim
                heads = list(picks(e["head"], n_heads))
                self.hooks.append(getattr(attns[l], proj).register_forward_pre_hook(
                    self._ablation(heads, head_dim, e["kind"] == "ablate-mean")))
        scales = [e for e in self.edits if e["kind"] == "scale"]
        if scales:
            seen = set()
            for module in self.model.modules():
                pymod = sys.modules.get(type(module).__module__)
                if pymod is None or id(pymod) in seen:
                    continue
                seen.add(id(pymod))
                original = getattr(pymod, "eager_attention_forward", None)
                if callable(original):
                    pymod.eager_attention_forward = self._scaled(original, scales, n_heads)
                    self.patched.append((pymod, original))
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        for pymod, original in reversed(self.patched):
            pymod.eager_attention_forward = original
        return False

    @staticmethod
    def _ablation(heads, head_dim, mean):
        def pre_hook(_module, args):
            x = args[0].clone()
            for h in heads:
                cols = slice(h * head_dim, (h + 1) * head_dim)
                x[..., cols] = x[..., cols].mean(dim=-2, keepdim=True).expand_as(x[..., cols]) if mean else 0.0
            return (x,) + tuple(args[1:])
        return pre_hook

    @staticmethod
    def _scaled(original, scales, n_heads):
        def eager_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
            layer = module.layer_idx
            mine = [e for e in scales if e["layer"] is None or e["layer"] == layer]
            if mine:
                b, h, tq, _ = query.shape
                tk = key.shape[-2]
                assert h == n_heads
                bias = torch.zeros(b, h, tq, tk, dtype=query.dtype, device=query.device)
                for e in mine:
                    if e["key"] < tk:
                        for head in picks(e["head"], h):
                            bias[:, head, :, e["key"]] += math.log(e["factor"]) if e["factor"] > 0 else -math.inf
                if attention_mask is None:
                    attention_mask = bias
                else:
                    assert attention_mask.dtype.is_floating_point, "expects an additive float mask"
                    attention_mask = attention_mask[..., :tk].expand(b, h, tq, tk) + bias
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        return eager_attention_forward


# ---------------------------------------------------------------------------------------------
# Running and saving


def fixture_meta(folder):
    with safe_open(str(folder / "expected.safetensors"), "pt") as f:
        return json.loads(f.metadata()["fixture"])


def expected_tensor(folder, name):
    with safe_open(str(folder / "expected.safetensors"), "pt") as f:
        return f.get_tensor(name)


def trace_run(model, trace, token_ids, edits):
    """[per prompt: {"attn/l": ..., "lse/l": ..., "q/l", "k/l", "next_token_probs"}]"""
    out = []
    with Edits(model, edits):
        for ids in token_ids:
            out.append(trace(model, torch.tensor([ids])))
    return out


def name_tensors(run_index, per_prompt, keep):
    tensors = {}
    for p, res in enumerate(per_prompt):
        for name, t in res.items():
            if "/" in name:
                kind, layer = name.split("/")
                if keep(kind, int(layer)):
                    tensors[f"edit{run_index}/{kind}/{p}/{layer}"] = t.float().contiguous()
            else:
                tensors[f"edit{run_index}/{name}/{p}"] = t.float().contiguous()
    return tensors


def check_scale_against_float_mask(model, ids, traced):
    """`scale:*.*:0=0.5` by the wrapper equals the plain model given a float 4D mask that adds
    ln 0.5 to column 0 (causal mask otherwise)."""
    t = len(ids)
    mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
    mask[:, 0] += math.log(0.5)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), attention_mask=mask[None, None], output_attentions=True)
    for l, a in enumerate(out.attentions):
        torch.testing.assert_close(a[0], traced[f"attn/{l}"], rtol=0, atol=1e-6)
    probs = torch.softmax(out.logits[0, -1].double(), -1).float()
    torch.testing.assert_close(probs, traced["next_token_probs"], rtol=0, atol=1e-6)


def check_renormalised(edited, baseline, key, factor):
    """The first edited layer's input is the unedited one: its attention is the baseline's with
    column `key` multiplied by `factor` and every row renormalised."""
    want = baseline.double().clone()
    want[..., key] *= factor
    want /= want.sum(-1, keepdim=True)
    torch.testing.assert_close(edited.double(), want, rtol=0, atol=2e-6)


def sanity(folder, model, trace, token_ids, runs, results, first_layer_of):
    """Checks every run against definitions and the unedited references; prints a summary."""
    baseline = [trace(model, torch.tensor([ids])) for ids in token_ids]
    n_layers = sum(1 for k in baseline[0] if k.startswith("attn/"))
    worst = 0.0
    for p in range(len(token_ids)):  # this script's unedited pass reproduces expected.safetensors
        for l in range(n_layers):
            worst = max(worst, (baseline[p][f"attn/{l}"] - expected_tensor(folder, f"attn/{p}/{l}")).abs().max().item())
    print(f"  unedited vs expected.safetensors: max |attn diff| {worst:.2e}")
    assert worst < 1e-4
    for r, (edits, per) in enumerate(zip(runs, results)):
        changed_attn = max((per[p][f"attn/{l}"] - baseline[p][f"attn/{l}"]).abs().max().item()
                           for p in range(len(token_ids)) for l in range(n_layers))
        changed_probs = max((per[p]["next_token_probs"] - baseline[p]["next_token_probs"]).abs().max().item()
                            for p in range(len(token_ids)))
        print(f"  edit{r} {edits}: max |attn change| {changed_attn:.3g}, max |next-token prob change| {changed_probs:.3g}")
        assert changed_probs > 0
        parsed = [parse_edit(e) for e in edits]
        scales = [e for e in parsed if e["kind"] == "scale"]
        if scales:
            assert changed_attn > 1e-3, "a scale edit must change attention"
            first = min(first_layer_of(e) for e in scales)
            for l in range(first):  # before the first edited layer nothing changes
                for p in range(len(token_ids)):
                    torch.testing.assert_close(per[p][f"attn/{l}"], baseline[p][f"attn/{l}"], rtol=0, atol=0)
            if len(scales) == 1 and scales[0]["head"] is None:
                e = scales[0]
                for p in range(len(token_ids)):
                    check_renormalised(per[p][f"attn/{first}"], baseline[p][f"attn/{first}"], e["key"], e["factor"])
                    if e["factor"] == 0:
                        assert per[p][f"attn/{first}"][..., e["key"]].abs().max() == 0
        else:
            # ablations act after the attention of their layer: it and the layers before are unchanged
            last = max(first_layer_of(e) for e in parsed)
            for l in range(last + 1):
                for p in range(len(token_ids)):
                    torch.testing.assert_close(per[p][f"attn/{l}"], baseline[p][f"attn/{l}"], rtol=0, atol=0)
    return baseline


def make_edits(folder, model, trace, runs, keep=lambda kind, layer: True, extra_meta=None):
    meta = fixture_meta(folder)
    token_ids = meta["token_ids"]
    results = [trace_run(model, trace, token_ids, edits) for edits in runs]
    first_layer_of = lambda e: 0 if e["layer"] is None else e["layer"]
    sanity(folder, model, trace, token_ids, runs, results, first_layer_of)
    i = runs.index(["scale:*.*:0=0.5"])
    check_scale_against_float_mask(model, token_ids[0], results[i][0])
    print("  scale:*.*:0=0.5 equals a float mask adding ln 0.5 to column 0")
    tensors = {}
    for r, per in enumerate(results):
        tensors.update(name_tensors(r, per, keep))
    out = {"runs": runs, "token_ids": token_ids, "prompts": meta.get("prompts"),
           "transformers": transformers.__version__, "torch": torch.__version__}
    out.update(extra_meta or {})
    path = folder / "edits.safetensors"
    save_file(tensors, str(path), metadata={"fixture": json.dumps(out)})
    print(f"  wrote {path.relative_to(ROOT)} ({len(tensors)} tensors, {path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# Models


def make_tiny_llama():
    folder = FIXTURES / "tiny-llama"
    model = LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    print("tiny-llama")
    make_edits(folder, model, llama_trace, TINY_RUNS)


def make_tiny_gpt2():
    folder = FIXTURES / "tiny-gpt2"
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    print("tiny-gpt2")
    make_edits(folder, model, gpt2_trace, TINY_RUNS)


def greedy(model, ids, eos):
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=GREEDY_NEW_TOKENS,
                             do_sample=False, eos_token_id=eos, pad_token_id=eos if eos is not None else None)
    return out[0, len(ids):].tolist()


def time_generate(model, ids, threads):
    """Tokens per second of a warm `generate` of exactly GREEDY_NEW_TOKENS tokens (eos ignored),
    after one warm-up run: the best of three runs (the least disturbed by other processes)."""
    x = torch.tensor([ids])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    kwargs = dict(attention_mask=torch.ones_like(x), max_new_tokens=GREEDY_NEW_TOKENS,
                  min_new_tokens=GREEDY_NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
    seconds = []
    with torch.no_grad():
        model.generate(x, **kwargs)
        for _ in range(3):
            start = time.perf_counter()
            out = model.generate(x, **kwargs)
            seconds.append(time.perf_counter() - start)
            assert out.shape[1] - x.shape[1] == GREEDY_NEW_TOKENS
    torch.set_num_threads(old)
    return GREEDY_NEW_TOKENS / min(seconds), seconds


def make_smollm2(real_dir, threads):
    smol = Path(real_dir) / "smollm2"
    if not (smol / SMOL_GGUF).exists():
        print(f"SmolLM2 skipped: {smol / SMOL_GGUF} not found")
        return
    from transformers import AutoTokenizer
    folder = FIXTURES / "real" / "smollm2"
    tok = AutoTokenizer.from_pretrained(smol, gguf_file=SMOL_GGUF)
    model = LlamaForCausalLM.from_pretrained(smol, gguf_file=SMOL_GGUF, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    print("smollm2")
    meta = fixture_meta(folder)
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    # Greedy references: prompt 0's ids, and "The capital of France is" as a chat user turn.
    chat_ids = tok.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False)
    if isinstance(chat_ids, dict) or hasattr(chat_ids, "input_ids"):
        chat_ids = chat_ids["input_ids"]
    chat_ids = list(chat_ids)
    greedy_refs = []
    for label, ids in (("prompt 0", meta["token_ids"][0]), ("chat: " + CHAT_PROMPT, chat_ids)):
        gen = greedy(model, ids, eos)
        eos_ids = eos if isinstance(eos, list) else [eos]
        greedy_refs.append({"prompt": label, "prompt_ids": ids, "generated": gen,
                            "stopped_early": len(gen) < GREEDY_NEW_TOKENS,
                            "ends_with_eos": bool(gen) and gen[-1] in eos_ids, "text": tok.decode(gen)})
        print(f"  greedy {label!r}: {len(gen)} tokens {tok.decode(gen)!r}")
    speed, seconds = time_generate(model, meta["token_ids"][0], threads)
    print(f"  generate: {speed:.1f} tokens/s ({threads} threads, runs {['%.3f' % s for s in seconds]} s)")
    extra = {"attn_layers": SMOL_ATTN_LAYERS, "greedy": greedy_refs,
             "greedy_settings": {"max_new_tokens": GREEDY_NEW_TOKENS, "do_sample": False, "eos_token_id": eos,
                                 "attn_implementation": "eager", "dtype": "float32", "gguf": SMOL_GGUF},
             "generate_tokens_per_s": round(speed, 1),
             "generate_timing": {"new_tokens": GREEDY_NEW_TOKENS, "prompt": "prompt 0", "threads": threads,
                                 "device": "cpu", "statistic": "best of 3 warm runs after 1 warm-up",
                                 "seconds": [round(x, 3) for x in seconds],
                                 "load_average_1min": round(os.getloadavg()[0], 2),
                                 "attn_implementation": "eager"}}
    make_edits(folder, model, llama_trace, SMOL_RUNS,
               keep=lambda kind, layer: kind == "lse" or (kind == "attn" and layer in SMOL_ATTN_LAYERS),
               extra_meta=extra)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models", default=os.path.expanduser("~/.cache/headwise/models"),
                    help="folder holding smollm2/ as fetched by headwise")
    ap.add_argument("--generate-threads", type=int, default=1,
                    help="torch threads for the generate timing (1: robust on a shared machine, where more "
                         "threads than free cores make it collapse)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the references themselves: one thread, reproducible
    make_tiny_llama()
    make_tiny_gpt2()
    make_smollm2(args.real_models, args.generate_threads)
