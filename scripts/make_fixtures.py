#!/usr/bin/env python3
"""Generates the test fixtures: tiny random BERT, GPT-2 and Llama (grouped-query attention)
checkpoints with their tokenizers, and the attention, queries and keys Hugging Face transformers
computes for them (eager attention); and, when the real models are present, references for
MiniLM and SmolLM2 on a few prompts.

Run once by a developer (needs torch, transformers, tokenizers, safetensors, gguf, accelerate);
never at test time. Usage: python3 scripts/make_fixtures.py [--retrace] [--real-models DIR]
where DIR holds `minilm/` and `smollm2/` as `headwise models fetch` lays them out.

Definitions match DESIGN.md: q and k are the vectors that enter the attention dot product
(after RoPE and any q/k norm, before any scale), shaped [heads, T, d] and [kv_heads, T, d];
lse is the logsumexp of each row of transformers' own logits (scaled, soft-capped, masked: the
input of its eager softmax), shaped [heads, T].
"""
import argparse
import json
import os
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers, normalizers
import transformers
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need, said the paper, and the heads agreed.",
    "A researcher opens a model, types a prompt and looks at every head.",
    "Queries and keys meet in a dot product; the softmax decides.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Numbers like 12345 and 3.14159 are split into digits or pieces.",
] * 20
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France, and the heads know it.",
]

torch.manual_seed(0)


RETRACE = False


def checkpoint(folder, make_tokenizer, make_model, cls, **load_args):
    """A fixture's tokenizer and model: made afresh and saved, or with --retrace the committed
    ones, so that adding a reference tensor to expected.safetensors leaves the weights as they
    are (tokenizer training is not reproducible across library versions)."""
    folder.mkdir(parents=True, exist_ok=True)
    if RETRACE and (folder / "model.safetensors").exists():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        model = cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32, **load_args)
        return tok, model.eval()
    tok = make_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    model = make_model(tok).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    return tok, model


def sharpen(model):
    """Random init at std 0.02 gives near-uniform attention, which would test little; wider
    weights make the attention peaky and the comparison meaningful."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln_" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.35 if p.dim() > 1 else 0.1))


def wordpiece_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return tok


def byte_bpe_tokenizer(bos=None):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + ([bos] if bos else [])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


class Capture:
    """Forward hooks that record projection outputs per layer."""

    def __init__(self):
        self.out = {}

    def hook(self, key):
        def fn(_module, _inputs, output):
            self.out[key] = output.detach().clone()
        return fn


class SoftmaxInputs:
    """Records the input of every attention softmax during a forward pass: transformers' eager
    attention logits after its scale, soft-cap and mask, one [batch, heads, T, T] per layer."""

    def __enter__(self):
        self.logits = []
        self.original = torch.nn.functional.softmax

        def softmax(input, dim=None, *args, **kwargs):
            if input.dim() == 4 and dim in (-1, 3):
                self.logits.append(input.detach().clone())
            return self.original(input, dim, *args, **kwargs)

        torch.nn.functional.softmax = softmax
        return self

    def __exit__(self, *_):
        torch.nn.functional.softmax = self.original

    def lse(self, layer, row=0):
        """[heads, T]: each query row's logsumexp of layer `layer`'s logits."""
        return torch.logsumexp(self.logits[layer][row].double(), dim=-1).float()


def heads(x, n):  # [1, T, n*d] -> [n, T, d]
    b, t, w = x.shape
    return x.view(t, n, w // n).transpose(0, 1).contiguous()


def bert_trace(model, enc, attention_mask=None):
    cap = Capture()
    hs = []
    for i, layer in enumerate(model.encoder.layer):
        hs.append(layer.attention.self.query.register_forward_hook(cap.hook(("q", i))))
        hs.append(layer.attention.self.key.register_forward_hook(cap.hook(("k", i))))
    with torch.no_grad(), SoftmaxInputs() as logits:
        out = model(**enc, output_attentions=True)
    for h in hs:
        h.remove()
    assert len(logits.logits) == len(out.attentions)
    n = model.config.num_attention_heads
    res = {}
    for i, a in enumerate(out.attentions):
        res[f"attn/{i}"] = a[0]
        res[f"lse/{i}"] = logits.lse(i)
        res[f"q/{i}"] = heads(cap.out[("q", i)][:1], n)
        res[f"k/{i}"] = heads(cap.out[("k", i)][:1], n)
    return res


def gpt2_trace(model, ids):
    cap = Capture()
    hs = [blk.attn.c_attn.register_forward_hook(cap.hook(("qkv", i))) for i, blk in enumerate(model.transformer.h)]
    with torch.no_grad(), SoftmaxInputs() as logits:
        out = model(input_ids=ids, output_attentions=True)
    for h in hs:
        h.remove()
    assert len(logits.logits) == len(out.attentions)
    n, e = model.config.n_head, model.config.n_embd
    res = {}
    for i, a in enumerate(out.attentions):
        qkv = cap.out[("qkv", i)]
        res[f"attn/{i}"] = a[0]
        res[f"lse/{i}"] = logits.lse(i)
        res[f"q/{i}"] = heads(qkv[..., :e], n)
        res[f"k/{i}"] = heads(qkv[..., e:2 * e], n)
    res["next_token_probs"] = torch.softmax(out.logits[0, -1].double(), -1).float()
    return res


def llama_trace(model, ids):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    cap = Capture()
    inner = model.model
    hs = []
    for i, layer in enumerate(inner.layers):
        hs.append(layer.self_attn.q_proj.register_forward_hook(cap.hook(("q", i))))
        hs.append(layer.self_attn.k_proj.register_forward_hook(cap.hook(("k", i))))
    with torch.no_grad():
        with SoftmaxInputs() as logits:
            out = model(input_ids=ids, output_attentions=True)
        t = ids.shape[1]
        pos = torch.arange(t).unsqueeze(0)
        cos, sin = inner.rotary_emb(torch.zeros(1, t, 1), pos)
    for h in hs:
        h.remove()
    cfg = model.config
    res = {}
    for i, a in enumerate(out.attentions):
        q = heads(cap.out[("q", i)], cfg.num_attention_heads).unsqueeze(0)
        k = heads(cap.out[("k", i)], cfg.num_key_value_heads).unsqueeze(0)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        res[f"attn/{i}"] = a[0]
        res[f"lse/{i}"] = logits.lse(i)
        res[f"q/{i}"] = q[0]
        res[f"k/{i}"] = k[0]
    res["next_token_probs"] = torch.softmax(out.logits[0, -1].double(), -1).float()
    return res


def decoder_trace(model, ids):
    """Any decoder of the Llama family: q and k exactly as they enter transformers' eager
    attention (after q/k norms and RoPE, before the scale), caught at its
    eager_attention_forward; the scale transformers passed with them; the logits' lse."""
    import sys
    module = sys.modules[type(model.model).__module__]
    original = module.eager_attention_forward
    qs, ks, scales = [], [], []

    def spy(attn_module, query, key, value, attention_mask, scaling, *args, **kwargs):
        qs.append(query[0].detach().clone())
        ks.append(key[0].detach().clone())
        scales.append(float(scaling))
        return original(attn_module, query, key, value, attention_mask, scaling, *args, **kwargs)

    module.eager_attention_forward = spy
    try:
        with torch.no_grad(), SoftmaxInputs() as logits:
            out = model(input_ids=ids, output_attentions=True)
    finally:
        module.eager_attention_forward = original
    assert len(qs) == len(out.attentions) == len(logits.logits)
    res = {}
    for i, a in enumerate(out.attentions):
        res[f"attn/{i}"] = a[0]
        res[f"q/{i}"] = qs[i]
        res[f"k/{i}"] = ks[i]
        res[f"lse/{i}"] = logits.lse(i)
    res["next_token_probs"] = torch.softmax(out.logits[0, -1].double(), -1).float()
    return res, scales


def save_expected(folder, per_prompt, prompts, token_ids, extra_meta=None, extra_tensors=None):
    tensors = {k: v.float().contiguous() for k, v in (extra_tensors or {}).items()}
    for p, res in enumerate(per_prompt):
        for name, t in res.items():
            tensors[f"{name.split('/')[0]}/{p}/{name.split('/')[1]}" if "/" in name else f"{name}/{p}"] = t.float().contiguous()
    meta = {"prompts": prompts, "token_ids": token_ids, "transformers": transformers.__version__,
            "torch": torch.__version__}
    meta.update(extra_meta or {})
    save_file(tensors, str(folder / "expected.safetensors"), metadata={"fixture": json.dumps(meta)})


def trace_prompts(folder, tok, model, trace):
    """Runs a decoder on every prompt, one at a time, and saves the expected tensors."""
    per_prompt, ids = [], []
    for text in PROMPTS:
        enc = tok.encode(text).ids
        ids.append(enc)
        per_prompt.append(trace(model, torch.tensor([enc])))
    save_expected(folder, per_prompt, PROMPTS, ids)


def make_bert():
    folder = FIXTURES / "tiny-bert"

    def build(tok):
        cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                         attn_implementation="eager")
        return BertModel(cfg, add_pooling_layer=False)

    tok, model = checkpoint(folder, wordpiece_tokenizer, build, BertModel, add_pooling_layer=False)
    per_prompt, ids = [], []
    for text in PROMPTS:
        enc = tok.encode(text)
        ids.append(enc.ids)
        per_prompt.append(bert_trace(model, bert_inputs([enc], len(enc.ids))))
    # A padded batch: the shorter prompt padded to the longer one's length, with a key mask.
    encs = [tok.encode("short one."), tok.encode(PROMPTS[0])]
    width = max(len(e.ids) for e in encs)
    batch = bert_inputs(encs, width)
    padded = bert_trace(model, batch)
    extra = {k.replace("/", "_", 1).replace("attn_", "padded_attn/").replace("q_", "padded_q/").replace("k_", "padded_k/").replace("lse_", "padded_lse/"): v
             for k, v in padded.items()}
    meta = {"padded_ids": batch["input_ids"][0].tolist(), "padded_mask": batch["attention_mask"][0].tolist()}
    save_expected(folder, per_prompt, PROMPTS, ids, meta, extra)


def bert_inputs(encodings, width):
    """input_ids, token_type_ids and attention_mask, right-padded with [PAD] (id 0)."""
    rows = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    for e in encodings:
        pad = width - len(e.ids)
        rows["input_ids"].append(e.ids + [0] * pad)
        rows["token_type_ids"].append(e.type_ids + [0] * pad)
        rows["attention_mask"].append([1] * len(e.ids) + [0] * pad)
    return {k: torch.tensor(v) for k, v in rows.items()}


def make_gpt2():
    folder = FIXTURES / "tiny-gpt2"

    def build(tok):
        cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                         activation_function="gelu_new", attn_implementation="eager")
        return GPT2LMHeadModel(cfg)

    tok, model = checkpoint(folder, byte_bpe_tokenizer, build, GPT2LMHeadModel)
    trace_prompts(folder, tok, model, gpt2_trace)


def make_llama():
    folder = FIXTURES / "tiny-llama"

    def build(tok):
        cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0,
                          rms_norm_eps=1e-6, tie_word_embeddings=False, attn_implementation="eager")
        return LlamaForCausalLM(cfg)

    tok, model = checkpoint(folder, lambda: byte_bpe_tokenizer(bos="<s>"), build, LlamaForCausalLM)
    trace_prompts(folder, tok, model, llama_trace)


def make_qwen2():
    """Qwen2: the Llama layout plus biases on q, k and v, here with tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    folder = FIXTURES / "tiny-qwen2"

    def build(tok):
        cfg = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=1000.0,
                          rms_norm_eps=1e-6, tie_word_embeddings=True, attn_implementation="eager")
        return Qwen2ForCausalLM(cfg)

    tok, model = checkpoint(folder, byte_bpe_tokenizer, build, Qwen2ForCausalLM)
    trace_prompts(folder, tok, model, llama_trace)


# Longer than the windows (a few tokens) and than the rope-scaled models' original length (16),
# with one short prompt that stays inside it.
FAMILY_PROMPTS = [
    "Paris is the capital of France.",
    "A researcher opens a model, types a prompt and looks at every head. Queries and keys meet "
    "in a dot product; the softmax decides.",
]


def make_family(name, config_class, model_class, **config):
    """A tiny random decoder of one family, its tokenizer, and transformers' eager references
    (attention, q, k, lse, next-token probabilities, and the scale each layer used)."""
    folder = FIXTURES / name
    torch.manual_seed(zlib.crc32(name.encode()))  # each family's weights independent of the others

    def build(tok):
        settings = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=2, rms_norm_eps=1e-6, attn_implementation="eager")
        settings.update(config)
        return model_class(config_class(**settings))

    tok, model = checkpoint(folder, lambda: byte_bpe_tokenizer(bos="<s>"), build, model_class)
    per_prompt, ids, scales = [], [], None
    for text in FAMILY_PROMPTS:
        enc = tok.encode(text).ids
        ids.append(enc)
        res, scales = decoder_trace(model, torch.tensor([enc]))
        per_prompt.append(res)
    save_expected(folder, per_prompt, FAMILY_PROMPTS, ids, {"scales": scales})
    return folder


def make_families():
    from transformers import (MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config, SmolLM3ForCausalLM)
    common = dict(max_position_embeddings=64, tie_word_embeddings=False)
    # Llama 3.1's scaling with a short original length, so that every kind of frequency (kept,
    # divided, blended) occurs and the long prompt runs past it.
    make_family("tiny-llama3", LlamaConfig, LlamaForCausalLM, num_hidden_layers=2, head_dim=16,
                rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, **common)
    make_family("tiny-llama-linear", LlamaConfig, LlamaForCausalLM, num_hidden_layers=2,
                rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, **common)
    make_family("tiny-mistral-window", MistralConfig, MistralForCausalLM, num_hidden_layers=2, sliding_window=4,
                **common)
    make_family("tiny-mistral", MistralConfig, MistralForCausalLM, num_hidden_layers=2, sliding_window=None,
                **common)
    # Qwen2.5's own switch: windows from layer max_window_layers on, only with use_sliding_window.
    make_family("tiny-qwen2-window", Qwen2Config, Qwen2ForCausalLM, num_hidden_layers=3, use_sliding_window=True,
                sliding_window=3, max_window_layers=1, **common)
    # Qwen3: per-head q/k RMSNorm, head_dim 16 with a width of 32 over 4 heads, and one windowed
    # layer named in layer_types.
    make_family("tiny-qwen3", Qwen3Config, Qwen3ForCausalLM, num_hidden_layers=2, head_dim=16,
                use_sliding_window=True, sliding_window=5, layer_types=["full_attention", "sliding_attention"],
                **common)
    # SmolLM3: every 4th layer without RoPE (and, here, windowed).
    make_family("tiny-smollm3", SmolLM3Config, SmolLM3ForCausalLM, num_hidden_layers=4, use_sliding_window=True,
                sliding_window=5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=None, bos_token_id=None,
                eos_token_id=None)
    # Phi-3: fused projections, half the head rotated, longrope past 16 tokens, a window.
    half = 4  # rotary dimensions / 2: head_dim 16 · 0.5 / 2
    # (Phi-3's config class sizes the factors from hidden_size / heads, not head_dim.)
    make_family("tiny-phi3", Phi3Config, Phi3ForCausalLM, num_hidden_layers=2, hidden_size=64, sliding_window=6,
                pad_token_id=None, bos_token_id=None, eos_token_id=None,
                original_max_position_embeddings=16, partial_rotary_factor=0.5,
                rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                 "short_factor": [1.0 + 0.25 * i for i in range(half)],
                                 "long_factor": [2.0 + 1.5 * i for i in range(half)]},
                **common)


GGUF_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"]


def permute_for_gguf(w, n_head):
    """llama.cpp's converter interleaves the two RoPE halves of each q/k head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(src, path, qname, extra_tensors=None):
    """The Llama checkpoint in folder `src` written as a GGUF file of tensor type `qname`, laid
    out as llama.cpp's converter lays it out; `extra_tensors` (name -> f32 array) are added."""
    import numpy as np
    import gguf
    from safetensors.numpy import load_file
    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    weights = load_file(str(src / "model.safetensors"))
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    specials = {a["id"] for a in tok["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    qtype = gguf.GGMLQuantizationType[qname]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(src.name)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // cfg["num_attention_heads"]:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in specials else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok["model"]["vocab"]["<s>"])
    w.add_add_bos_token(True)
    for hf, gg in names.items():
        t = weights[hf].astype(np.float32)
        if hf.endswith("q_proj.weight"):
            t = permute_for_gguf(t, cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            t = permute_for_gguf(t, cfg["num_key_value_heads"])
        if t.ndim == 1 or qname == "F32":
            w.add_tensor(gg, t)
        elif qname == "F16":
            w.add_tensor(gg, t.astype(np.float16))
        else:
            w.add_tensor(gg, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
    for name, t in (extra_tensors or {}).items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_rope_freqs(cfg):
    """Llama 3's RoPE scaling as llama.cpp's converter stores it: the divisor of each frequency
    (its `rope_freqs.weight`), from the config's rope parameters."""
    import math
    import numpy as np
    rope = cfg["rope_parameters"]
    base = rope["rope_theta"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_len = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def make_llama3_gguf():
    """The tiny Llama 3 as an F32 GGUF file with its rope_freqs tensor. Its reference is
    transformers on the Hugging Face folder (tiny-llama3/expected.safetensors): transformers'
    own GGUF loader ignores rope_freqs.weight, so it would compute unscaled RoPE."""
    src = FIXTURES / "tiny-llama3"
    cfg = json.loads((src / "config.json").read_text())
    path = FIXTURES / "tiny-gguf" / "tiny-llama3.F32.gguf"
    write_llama_gguf(src, path, "F32", {"rope_freqs.weight": llama3_rope_freqs(cfg)})


def make_tiny_ggufs():
    """The tiny Llama written as GGUF files in each supported tensor type, as llama.cpp lays
    them out, with transformers' GGUF loader (which dequantises) as the reference."""
    folder = FIXTURES / "tiny-gguf"
    folder.mkdir(parents=True, exist_ok=True)
    for qname in GGUF_TYPES:
        path = folder / f"tiny-llama.{qname}.gguf"
        write_llama_gguf(FIXTURES / "tiny-llama", path, qname)
        from transformers import AutoTokenizer
        hf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
        model = LlamaForCausalLM.from_pretrained(folder, gguf_file=path.name, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
        per, ids = [], []
        for text in PROMPTS:
            enc = hf_tok(text).input_ids
            ids.append(enc)
            per.append(llama_trace(model, torch.tensor([enc])))
        out = folder / qname
        out.mkdir(exist_ok=True)
        save_expected(out, per, PROMPTS, ids)


REAL_PROMPTS = [
    "The capital of France is",
    "Attention heads in a transformer often look at the previous token.",
    "I bought 3 apples, 12 pears and a kiwi for $4.50!",
]
TOKENIZER_ONLY_PROMPTS = [
    "  leading spaces and\ttabs\nnew lines",
    "Ünïcödé, emoji 🤖 and CJK 注意力",
    "<|im_start|>user\nHello<|im_end|>",
    "1234567890 and 3.14159",
]


def make_real(real_dir):
    out = FIXTURES / "real"
    out.mkdir(parents=True, exist_ok=True)
    minilm = Path(real_dir) / "minilm"
    if minilm.exists():
        from transformers import AutoTokenizer
        model = BertModel.from_pretrained(minilm, attn_implementation="eager", add_pooling_layer=False).eval()
        tok = AutoTokenizer.from_pretrained(minilm)
        per, ids = [], []
        for text in REAL_PROMPTS:
            enc = tok(text, return_tensors="pt")
            ids.append(enc["input_ids"][0].tolist())
            per.append(bert_trace(model, {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}))
        tmp = out / "minilm"
        tmp.mkdir(exist_ok=True)
        save_expected(tmp, per, REAL_PROMPTS, ids)
    smol = Path(real_dir) / "smollm2"
    if smol.exists():
        from transformers import AutoTokenizer
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(smol, gguf_file=gguf)
        model = LlamaForCausalLM.from_pretrained(smol, gguf_file=gguf, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
        per, ids = [], []
        for text in REAL_PROMPTS:
            enc = tok(text).input_ids
            ids.append(enc)
            per.append(llama_trace(model, torch.tensor([enc])))
        tmp = out / "smollm2"
        tmp.mkdir(exist_ok=True)
        extra_ids = [tok(t).input_ids for t in TOKENIZER_ONLY_PROMPTS]
        top = [(tok.decode([i]), float(p)) for p, i in zip(*torch.topk(per[0]["next_token_probs"], 5))]
        save_expected(tmp, per, REAL_PROMPTS, ids,
                      {"tokenizer_prompts": TOKENIZER_ONLY_PROMPTS, "tokenizer_ids": extra_ids, "top5_first_prompt": top})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models", help="folder holding minilm/ and smollm2/ as fetched by headwise")
    ap.add_argument("--retrace", action="store_true",
                    help="keep the committed tiny checkpoints and tokenizers; rewrite only the references")
    args = ap.parse_args()
    RETRACE = args.retrace
    make_bert()
    make_gpt2()
    make_llama()
    make_qwen2()
    make_tiny_ggufs()
    make_families()
    make_llama3_gguf()
    if args.real_models:
        make_real(args.real_models)
    print("fixtures written to", FIXTURES)
