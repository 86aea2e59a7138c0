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

    def spy(attn_module, query, key, value, attention_mask, *args, **kwargs):
        qs.append(query[0].detach().clone())
        ks.append(key[0].detach().clone())
        # Gemma's eager attention takes dropout before scaling: the scale is a keyword there.
        scales.append(float(kwargs["scaling"] if "scaling" in kwargs else args[0]))
        return original(attn_module, query, key, value, attention_mask, *args, **kwargs)

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


def make_olmo2():
    """OLMo 2: RMSNorm after attention and after the MLP (none before), q and k normed over the
    whole projection before the split into heads and RoPE."""
    from transformers import Olmo2Config, Olmo2ForCausalLM
    make_family("tiny-olmo2", Olmo2Config, Olmo2ForCausalLM, num_hidden_layers=2, max_position_embeddings=64,
                tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                pad_token_id=None, bos_token_id=None, eos_token_id=None)


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


def add_byte_bpe_tokenizer(w, tok):
    """A byte-level BPE tokenizer (tokenizer.json `tok`, with `<s>` prepended to every prompt)
    as llama.cpp's converter stores one in GGUF metadata."""
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    specials = {a["id"] for a in tok["added_tokens"] if a["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in specials else 1 for i in range(len(tokens))])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(tok["model"]["vocab"]["<s>"])
    w.add_add_bos_token(True)


def write_llama_gguf(src, path, qname, extra_tensors=None):
    """The Llama checkpoint in folder `src` written as a GGUF file of tensor type `qname`, laid
    out as llama.cpp's converter lays it out; `extra_tensors` (name -> f32 array) are added."""
    import numpy as np
    import gguf
    from safetensors.numpy import load_file
    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    weights = load_file(str(src / "model.safetensors"))
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
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
    add_byte_bpe_tokenizer(w, tok)
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


# GGUF files of today's families, written as llama.cpp's converter writes them, with
# transformers reading the same file as the reference. transformers' GGUF loader carries only
# some settings (GGUF_CONFIG_MAPPING in transformers/integrations/ggml.py) and takes its config
# class's defaults for the rest, so each checkpoint here is made with those defaults wherever the
# file cannot say otherwise: Qwen3's head_dim 128 (its mapping skips attention.key_length);
# Gemma's query_pre_attn_scalar 256 (no GGUF key), Gemma 2's soft-caps 50 and 30, Gemma 3's
# local RoPE base 10000 and one full layer in six. The tiny folder fixtures (tiny-qwen3,
# tiny-gemma2, ...) use windows, scales and layer patterns a GGUF file cannot carry.
GGUF_TOKENIZER = FIXTURES / "tiny-qwen3" / "tokenizer.json"


def gguf_arch(name):
    import gguf
    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == name)


def gguf_family_tensors(model, arch, norm_shift=0.0):
    """The model's weights under llama.cpp's tensor names for `arch` (gguf-py's own map, as the
    converter uses it), fused tensors kept fused; `norm_shift` added to every norm weight (Gemma's
    converter stores 1 + w)."""
    import gguf
    names = gguf.get_tensor_name_map(gguf_arch(arch), model.config.num_hidden_layers)
    out = {}
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        base, suffix = hf.rsplit(".", 1)
        gg = names.get_name(base)
        assert gg is not None, f"{arch}: no GGUF name for {hf}"
        t = t.detach().float().numpy()
        if norm_shift and hf.endswith("norm.weight"):
            t = t + norm_shift
        out[f"{gg}.{suffix}"] = t
    return out


def write_family_gguf(path, arch, model, metadata, qname="F32", norm_shift=0.0, extra_tensors=None):
    """`model` as a GGUF file: `metadata(writer)` writes the architecture's keys; the tokenizer is
    the tiny byte-level BPE; 2-D weights in `qname` (F32 or F16), norms and vectors in F32."""
    import numpy as np
    import gguf
    tok = json.loads(GGUF_TOKENIZER.read_text())
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    metadata(w)
    w.add_vocab_size(model.config.vocab_size)
    add_byte_bpe_tokenizer(w, tok)
    tensors = gguf_family_tensors(model, arch, norm_shift)
    tensors.update(extra_tensors or {})
    for name, t in tensors.items():
        if qname == "F16" and t.ndim > 1:
            w.add_tensor(name, t.astype(np.float16))
        else:
            w.add_tensor(name, t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_common_keys(w, cfg):
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)


# Shorter prompts for the Gemma files, whose 256-wide heads make every recorded token cost: still
# longer than their windows (3 and 4 tokens).
SHORT_PROMPTS = ["Paris is the capital of France.", "Queries and keys meet; the softmax decides."]


def trace_family_gguf(path, model_class, out, prompts=FAMILY_PROMPTS):
    """transformers reading the GGUF file (its own loader, eager attention) on `prompts`: the
    expected tensors, the scale each layer used, and the settings it read."""
    from transformers import AutoTokenizer
    folder = path.parent
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
    model = model_class.from_pretrained(folder, gguf_file=path.name, attn_implementation="eager",
                                        dtype=torch.float32).eval()
    per, ids, scales = [], [], None
    for text in prompts:
        enc = tok(text).input_ids
        ids.append(enc)
        res, scales = decoder_trace(model, torch.tensor([enc]))
        per.append(res)
    cfg = model.config
    read = {k: getattr(cfg, k, None) for k in ("head_dim", "sliding_window", "layer_types", "rope_parameters",
                                                 "query_pre_attn_scalar", "attn_logit_softcapping",
                                                 "final_logit_softcapping", "rms_norm_eps",
                                                 "tie_word_embeddings", "max_position_embeddings")}
    out.mkdir(parents=True, exist_ok=True)
    save_expected(out, per, prompts, ids, {"scales": scales, "config": json.loads(json.dumps(read, default=str))})


def gguf_source(name, config_class, model_class, gemma=False, **config):
    """A tiny random decoder to write as GGUF, seeded by its name. Gemma's RMSNorm multiplies by
    (1 + w), so its norm weights stay near 0 (as in make_gemma_fixtures.py): near 1 they double
    every norm's output, and six layers of that grow f32 rounding past 1e-5 (transformers'
    float32 against its own float64)."""
    torch.manual_seed(zlib.crc32(name.encode()))
    settings = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=64,
                    attn_implementation="eager")
    settings.update(config)
    model = model_class(config_class(**settings)).eval()
    sharpen(model)
    if gemma:
        with torch.no_grad():
            for hf, p in model.named_parameters():
                if "norm" in hf:
                    p.copy_(0.1 * torch.randn_like(p))
    return model


def make_family_ggufs():
    from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, Phi3Config,
                              Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
    folder = FIXTURES / "tiny-gguf"
    folder.mkdir(parents=True, exist_ok=True)

    # Qwen2: biases on q, k and v, q and k not permuted (llama.cpp permutes only for its llama
    # architecture, and transformers un-permutes only there).
    model = gguf_source("gguf-qwen2", Qwen2Config, Qwen2ForCausalLM, num_hidden_layers=2, rope_theta=1000.0,
                        tie_word_embeddings=True)

    def qwen2_keys(w):
        gguf_common_keys(w, model.config)
        w.add_rope_freq_base(1000.0)
    path = folder / "tiny-qwen2.F32.gguf"
    write_family_gguf(path, "qwen2", model, qwen2_keys)
    trace_family_gguf(path, Qwen2ForCausalLM, folder / "qwen2")

    # Qwen3: per-head q/k norms (attn_q_norm, attn_k_norm), head_dim 128 != hidden / heads.
    model = gguf_source("gguf-qwen3", Qwen3Config, Qwen3ForCausalLM, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=128, rope_theta=1000.0, tie_word_embeddings=False)

    def qwen3_keys(w):
        gguf_common_keys(w, model.config)
        w.add_rope_freq_base(1000.0)
        w.add_key_length(128)
        w.add_value_length(128)
    path = folder / "tiny-qwen3.F32.gguf"
    write_family_gguf(path, "qwen3", model, qwen3_keys)
    trace_family_gguf(path, Qwen3ForCausalLM, folder / "qwen3")

    # Phi-3: fused attn_qkv and ffn_up (gate and up); the keys Phi3MiniModel writes, a
    # sliding_window of 0 as it writes for a model without one.
    model = gguf_source("gguf-phi3", Phi3Config, Phi3ForCausalLM, num_hidden_layers=2, rope_theta=500.0,
                        original_max_position_embeddings=64, sliding_window=None, tie_word_embeddings=False,
                        pad_token_id=None, bos_token_id=None, eos_token_id=None)

    def phi3_keys(w):
        gguf_common_keys(w, model.config)
        w.add_rope_scaling_orig_ctx_len(64)
        w.add_rope_dimension_count(8)
        w.add_rope_freq_base(500.0)
        w.add_sliding_window(0)
        # Phi3Config's default pad and eos ids (32000) lie outside this vocabulary.
        w.add_pad_token_id(0)
        w.add_eos_token_id(0)
    path = folder / "tiny-phi3.F32.gguf"
    write_family_gguf(path, "phi3", model, phi3_keys)
    trace_family_gguf(path, Phi3ForCausalLM, folder / "phi3")

    # Gemma 2: norms stored as 1 + w, soft-caps and window as Gemma2Model writes them, head_dim
    # 256 (the query_pre_attn_scalar transformers assumes), sliding and full layers alternating.
    model = gguf_source("gguf-gemma2", Gemma2Config, Gemma2ForCausalLM, gemma=True, hidden_size=16, intermediate_size=32,
                        num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                        sliding_window=4, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                        eos_token_id=0)

    def gemma2_keys(w):
        gguf_common_keys(w, model.config)
        w.add_key_length(256)
        w.add_value_length(256)
        w.add_attn_logit_softcapping(50.0)
        w.add_final_logit_softcapping(30.0)
        w.add_sliding_window(4)
    path = folder / "tiny-gemma2.F32.gguf"
    write_family_gguf(path, "gemma2", model, gemma2_keys, norm_shift=1.0)
    trace_family_gguf(path, Gemma2ForCausalLM, folder / "gemma2", SHORT_PROMPTS)

    # Gemma 3 (text): q/k norms, five sliding layers then a full one, the global RoPE base from
    # rope.freq_base and the local one transformers' default (llama.cpp's too). F16 weights
    # keep the six layers of 256-wide heads small.
    model = gguf_source("gguf-gemma3", Gemma3TextConfig, Gemma3ForCausalLM, gemma=True, hidden_size=16, intermediate_size=32,
                        num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                        sliding_window=3, rope_parameters={
                            "full_attention": {"rope_type": "default", "rope_theta": 100.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                        tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=0)

    def gemma3_keys(w):
        gguf_common_keys(w, model.config)
        w.add_key_length(256)
        w.add_value_length(256)
        w.add_rope_freq_base(100.0)
        w.add_sliding_window(3)
    path = folder / "tiny-gemma3.F16.gguf"
    write_family_gguf(path, "gemma3", model, gemma3_keys, qname="F16", norm_shift=1.0)
    trace_family_gguf(path, Gemma3ForCausalLM, folder / "gemma3", SHORT_PROMPTS)


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
    make_olmo2()
    make_llama3_gguf()
    make_family_ggufs()
    if args.real_models:
        make_real(args.real_models)
    print("fixtures written to", FIXTURES)
