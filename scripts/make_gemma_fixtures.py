#!/usr/bin/env python3
"""Generates the Gemma-family test fixtures: tiny random Gemma 1, Gemma 2, Gemma 3 (text only)
and Gemma 3 (multimodal folder, whose text tower headwise reads) checkpoints with their
tokenizers, and what Hugging Face transformers computes for them with eager attention:
attention, queries, keys, the logsumexp of each attention row, and the next-token distribution.

Run once by a developer (needs torch, transformers, tokenizers, safetensors); never at test time.
Usage: python3 scripts/make_gemma_fixtures.py
       python3 scripts/make_gemma_fixtures.py --bench DIR --headwise PATH   (BENCHMARKS.md's Gemma row)

Definitions match DESIGN.md: q and k are the vectors entering the attention dot product (after
the q/k RMSNorm and RoPE, before the query_pre_attn_scalar^-0.5 scale), shaped [heads, T, d] and
[kv_heads, T, d]; lse is logsumexp over keys of the eager logits
softcap(scale * q.k) + mask, shaped [heads, T]. They are recorded inside transformers' own
eager attention function, so they are exactly what it multiplies.

The configs are chosen so that every Gemma feature changes the numbers: sliding windows of 3 or
4 tokens under prompts of a dozen, soft-caps small enough to bend the logits, a
query_pre_attn_scalar different from head_dim, a head_dim different from hidden/heads, and
Gemma 3's two RoPE bases (with linear scaling on its global layers).
"""
import json
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIXTURES, PROMPTS, byte_bpe_tokenizer, save_expected  # noqa: E402

from transformers.models.gemma import modeling_gemma  # noqa: E402
from transformers.models.gemma2 import modeling_gemma2  # noqa: E402
from transformers.models.gemma3 import modeling_gemma3  # noqa: E402

torch.manual_seed(0)


def sharpen(model):
    """Wider weights than the init so that attention is peaky and the comparison meaningful.
    Gemma's RMSNorm multiplies by (1 + w), so its norm weights stay near 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.35 if p.dim() > 1 else 0.1))


class Recorder:
    """Wraps a modeling module's eager attention function to keep, per layer, the query and key
    it receives and the logsumexp of the logits it softmaxes (computed as it does)."""

    def __init__(self, module):
        self.module = module
        self.original = module.eager_attention_forward
        self.out = {}
        self.max_scaled_logit = 0.0

    def __enter__(self):
        original = self.original

        def recording(attn, query, key, value, attention_mask, *args, scaling=None, softcap=None, **kwargs):
            groups = attn.num_key_value_groups
            keys = self.module.repeat_kv(key, groups)
            logits = torch.matmul(query, keys.transpose(2, 3)) * scaling
            self.max_scaled_logit = max(self.max_scaled_logit, float(logits.abs().max()))
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            if attention_mask is not None:
                if attention_mask.dtype == torch.bool:
                    attention_mask = torch.where(attention_mask, 0.0, torch.finfo(logits.dtype).min)
                logits = logits + attention_mask
            i = attn.layer_idx
            self.out[f"q/{i}"] = query[0].detach().clone()
            self.out[f"k/{i}"] = key[0].detach().clone()
            self.out[f"lse/{i}"] = torch.logsumexp(logits, dim=-1)[0].detach().clone()
            self.out[f"logits/{i}"] = logits[0].detach().clone()
            kw = dict(kwargs)
            if softcap is not None:
                kw["softcap"] = softcap
            return original(attn, query, key, value, attention_mask, *args, scaling=scaling, **kw)

        self.module.eager_attention_forward = recording
        return self

    def __exit__(self, *exc):
        self.module.eager_attention_forward = self.original


def trace(model, module, ids, final_softcap):
    """attn, q, k, lse per layer and the next-token distribution for one prompt."""
    with Recorder(module) as rec, torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    res = {}
    for i, a in enumerate(out.attentions):
        res[f"attn/{i}"] = a[0]
        for name in ("q", "k", "lse"):
            res[f"{name}/{i}"] = rec.out[f"{name}/{i}"]
        # The recorded logits reproduce transformers' own attention.
        rebuilt = torch.exp(rec.out[f"logits/{i}"] - res[f"lse/{i}"].unsqueeze(-1))
        assert torch.allclose(rebuilt, a[0], atol=1e-6), f"lse of layer {i} does not rebuild the attention"
    assert len(rec.out) == 4 * len(out.attentions), "the eager attention was not the one called"
    logits = out.logits[0, -1].double()
    res["next_token_probs"] = torch.softmax(logits, -1).float()
    top2 = torch.topk(res["next_token_probs"], 2).values
    assert top2[0] - top2[1] > 1e-3, "the top next token must be clear of the second"
    return res, rec.max_scaled_logit, float(logits.abs().max()), final_softcap


def write(folder, tok, model, module, final_softcap, extra_meta=None):
    per, ids, stats = [], [], []
    for text in PROMPTS:
        enc = tok.encode(text).ids
        ids.append(enc)
        res, max_logit, max_final, _ = trace(model, module, torch.tensor([enc]), final_softcap)
        per.append(res)
        stats.append((len(enc), max_logit, max_final))
    save_expected(folder, per, PROMPTS, ids, extra_meta)
    print(f"{folder.name}: tokens, max |scaled attention logit|, max |final logit| = {stats}")


def tokenizer(folder):
    tok = byte_bpe_tokenizer(bos="<bos>")
    tok.save(str(folder / "tokenizer.json"))
    return tok


def fresh(name):
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    return folder


def make_gemma():
    """Gemma 1: (1 + w) RMSNorm, sqrt(hidden) embedding scale, GELU-tanh GLU (from the legacy
    `hidden_act: gelu`, which transformers reads as the tanh approximation), tied embeddings,
    and here biases on the attention projections (`attention_bias`)."""
    from transformers import GemmaConfig, GemmaForCausalLM
    folder = fresh("tiny-gemma")
    tok = tokenizer(folder)
    cfg = GemmaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                      rope_theta=100.0, hidden_act="gelu", attention_bias=True, rms_norm_eps=1e-6, attn_implementation="eager")
    model = GemmaForCausalLM(cfg).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    write(folder, tok, model, modeling_gemma, None)


def make_gemma2():
    """Gemma 2: attention and final soft-capping, query_pre_attn_scalar, alternating sliding
    (window 4) and full layers, pre/post feed-forward norms and the post-attention norm."""
    from transformers import Gemma2Config, Gemma2ForCausalLM
    folder = fresh("tiny-gemma2")
    tok = tokenizer(folder)
    cfg = Gemma2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                       rope_theta=100.0, query_pre_attn_scalar=24, sliding_window=4, attn_logit_softcapping=4.0,
                       final_logit_softcapping=5.0, rms_norm_eps=1e-6, attn_implementation="eager")
    model = Gemma2ForCausalLM(cfg).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    write(folder, tok, model, modeling_gemma2, cfg.final_logit_softcapping)


def gemma3_text_config(vocab, **extra):
    from transformers import Gemma3TextConfig
    return Gemma3TextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, query_pre_attn_scalar=20, sliding_window=3,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                         "full_attention": {"rope_type": "linear", "rope_theta": 100.0, "factor": 2.0}},
        rms_norm_eps=1e-6, attn_implementation="eager", **extra)


def make_gemma3_text():
    """Gemma 3 text: q/k RMSNorm, a local RoPE base on sliding layers (window 3) and a linearly
    scaled global one on full layers, final soft-capping (null in Google's releases, set here so
    that it is exercised)."""
    from transformers import Gemma3ForCausalLM
    folder = fresh("tiny-gemma3-text")
    tok = tokenizer(folder)
    cfg = gemma3_text_config(tok.get_vocab_size(), final_logit_softcapping=5.0)
    model = Gemma3ForCausalLM(cfg).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    write(folder, tok, model, modeling_gemma3, cfg.final_logit_softcapping)


def make_gemma3_multimodal():
    """A `gemma3` folder as Google publishes them: a SigLIP tower, a projector and the Gemma 3
    text model, the config in the older form (`rope_theta`, `rope_local_base_freq`,
    `rope_scaling` for global layers, `sliding_window_pattern` instead of `layer_types`) and the
    weights under the older names (`language_model.model.*`). transformers reads both back;
    headwise reads the text tower. Gemma3ForConditionalGeneration applies no final soft-cap."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig
    from safetensors.torch import load_file, save_file
    folder = fresh("tiny-gemma3")
    tok = tokenizer(folder)
    vocab = tok.get_vocab_size()
    text = gemma3_text_config(vocab)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=8, vision_use_head=False)
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                       boi_token_index=vocab + 1, eoi_token_index=vocab + 2, image_token_index=vocab + 3)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = Gemma3ForConditionalGeneration(cfg).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)

    # Rewrite the config and the weight names in the form of Google's published checkpoints.
    config = json.loads((folder / "config.json").read_text())
    tc = config["text_config"]
    rope = tc.pop("rope_parameters")
    tc["rope_theta"] = rope["full_attention"]["rope_theta"]
    tc["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
    tc["rope_scaling"] = {"rope_type": "linear", "factor": rope["full_attention"]["factor"]}
    assert tc.pop("layer_types") == text.layer_types
    tc["sliding_window_pattern"] = 3  # layers 0, 1 sliding; 2 full; 3 sliding
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {}
    for name, t in weights.items():
        if name.startswith("model.language_model."):
            name = "language_model.model." + name[len("model.language_model."):]
        elif name.startswith("model."):
            name = name[len("model."):]
        elif name == "lm_head.weight":
            continue  # tied to the embedding
        renamed[name] = t.contiguous()
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})

    reloaded = Gemma3ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    assert reloaded.config.text_config.layer_types == text.layer_types
    assert reloaded.config.text_config.rope_parameters == text.rope_parameters, reloaded.config.text_config.rope_parameters
    ours = dict(model.state_dict())
    for name, t in reloaded.state_dict().items():
        assert torch.equal(t, ours[name]), f"{name} did not survive the rename"
    write(folder, tok, reloaded, modeling_gemma3, None)


def bench(folder, headwise, tokens, runs):
    """The forward-speed comparison of BENCHMARKS.md: a Gemma 3 text model of SmolLM2-135M's
    size (30 layers, hidden 576, 9 heads over 3 kv heads of 64, GLU 1536, vocabulary 49152;
    Gemma 3 1B's layer pattern, window 512), random weights, written to `folder` (not
    committed: 540 MB), timed with transformers and with `headwise bench trace` as
    scripts/bench_compare.py times the real models."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast
    from bench_compare import time_headwise, time_hf
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = FIXTURES / "tiny-gemma3-text"
    (folder / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    cfg = Gemma3TextConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, head_dim=64, query_pre_attn_scalar=64,
                           max_position_embeddings=8192, sliding_window=512, sliding_window_pattern=6,
                           rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, attn_implementation="eager")
    model = Gemma3ForCausalLM(cfg).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}",
          file=sys.stderr)
    print("| model | tokens | headwise device | headwise median ms | transformers median ms | speed-up (transformers / headwise) |")
    print("|---|---:|---|---:|---:|---:|")
    for t in tokens:
        hf = time_hf(tok, model, t, runs)
        ours = time_headwise(headwise, str(folder), t, "cpu", runs)
        print(f"| Gemma 3, SmolLM2's size | {t} | {ours['device']} | {ours['median_ms']:.1f} | {hf:.1f} | "
              f"{hf / ours['median_ms']:.2f}x |", flush=True)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", metavar="DIR", help="instead of the fixtures: write the SmolLM2-sized Gemma 3 to DIR "
                    "and time it against transformers (needs --headwise)")
    ap.add_argument("--headwise", help="the headwise binary to time")
    ap.add_argument("--tokens", default="128,512")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.bench:
        bench(args.bench, args.headwise, [int(t) for t in args.tokens.split(",")], args.runs)
        sys.exit(0)
    make_gemma()
    make_gemma2()
    make_gemma3_text()
    make_gemma3_multimodal()
    print("transformers", transformers.__version__, "fixtures written to", FIXTURES)
