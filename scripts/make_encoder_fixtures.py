#!/usr/bin/env python3
"""Generates the fixtures of today's encoder families with Hugging Face transformers (eager
attention), each a tiny random checkpoint in a Hugging Face folder with what transformers computes
for it in expected.safetensors:

- RoBERTa (byte-level BPE) and XLM-RoBERTa (a Unigram tokenizer): positions offset by the padding
  index, a one-entry token type table; also a right-padded batch (pad tokens take position
  `padding_idx`);
- DistilBERT (its own weight and config names) with sinusoidal position embeddings;
- CLIP and SigLIP vision towers, bare (`clip_vision_model`, `siglip_vision_model`) and as the
  vision half of a full CLIP / SigLIP folder (text tower included, unused), on given pixel values
  at the trained size and, with `interpolate_pos_encoding=True`, on a non-square patch grid;
- the pixel values CLIP's and SigLIP's image processors (the Pillow backend) give for the sample
  photographs, under the configurations those models ship with and under their class defaults;
- ModernBERT (alternating local/global attention, RoPE with two bases, GeGLU), on prompts longer
  than its local window.

Run once by a developer (needs torch, transformers, tokenizers, safetensors, pillow); never at
test time. Usage: python3 scripts/make_encoder_fixtures.py [FAMILY ...]

Definitions match DESIGN.md: q and k are the vectors that enter the attention dot product (after
RoPE, before the scale), shaped [heads, T, d]; lse is the logsumexp of each row of the logits
`scale · q·kᵀ + mask`, [heads, T].
"""
import json
import math
import re
import sys
from pathlib import Path

import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import PROMPTS, TRAINING_TEXT, sharpen, wordpiece_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ASSETS = ROOT / "assets"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def heads(x, n):  # [1, T, n*d] -> [n, T, d]
    _, t, w = x.shape
    return x.reshape(t, n, w // n).transpose(0, 1).contiguous()


def lse(q, k, scale, mask=None):
    """logsumexp of each row of `scale * q k^T + mask` (q [heads, T, d], k [heads, T, d]), in
    float64 so the reference carries no rounding of its own."""
    z = torch.matmul(q.double(), k.double().transpose(1, 2)) * scale
    if mask is not None:
        z = z + mask.double()
    return torch.logsumexp(z, dim=-1).float()


def capture(model, patterns):
    """Forward hooks on the Linear modules whose name matches one of `patterns` (kind -> regex
    with the layer number as group 1): returns (captured dict, hook handles)."""
    captured, hooks = {}, []
    for name, module in model.named_modules():
        for kind, pattern in patterns.items():
            m = re.search(pattern, name)
            if m and isinstance(module, torch.nn.Linear):
                key = (kind, int(m.group(1)))
                hooks.append(module.register_forward_hook(
                    lambda _m, _i, out, key=key: captured.__setitem__(key, out.detach().clone())))
    return captured, hooks


def save(folder, tensors, meta):
    meta = dict(meta, transformers=transformers.__version__, torch=torch.__version__)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(folder / "expected.safetensors"),
              metadata={"fixture": json.dumps(meta)})


# --- text encoders -------------------------------------------------------------------------------

BERT_LIKE = {"q": r"layer\.(\d+)\.attention\.self\.query$", "k": r"layer\.(\d+)\.attention\.self\.key$"}
DISTILBERT = {"q": r"layer\.(\d+)\.attention\.q_lin$", "k": r"layer\.(\d+)\.attention\.k_lin$"}


def encoder_trace(model, patterns, batch, row=0):
    """Attention, q, k and lse of every layer for row `row` of a batch."""
    captured, hooks = capture(model, patterns)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    for h in hooks:
        h.remove()
    n = model.config.num_attention_heads
    mask = None
    if "attention_mask" in batch:
        valid = batch["attention_mask"][row].bool()
        mask = torch.where(valid, 0.0, torch.finfo(torch.float32).min).unsqueeze(0).expand(len(valid), -1)
    res = {}
    for i, a in enumerate(out.attentions):
        q = heads(captured[("q", i)][row:row + 1], n)
        k = heads(captured[("k", i)][row:row + 1], n)
        res[f"attn/{i}"] = a[row]
        res[f"q/{i}"] = q
        res[f"k/{i}"] = k
        res[f"lse/{i}"] = lse(q, k, 1 / math.sqrt(q.shape[-1]), mask)
    return res


def padded_batch(encodings, pad_id, with_types):
    width = max(len(e.ids) for e in encodings)
    rows = {"input_ids": [], "attention_mask": []}
    if with_types:
        rows["token_type_ids"] = []
    for e in encodings:
        pad = width - len(e.ids)
        rows["input_ids"].append(e.ids + [pad_id] * pad)
        rows["attention_mask"].append([1] * len(e.ids) + [0] * pad)
        if with_types:
            rows["token_type_ids"].append([0] * width)
    return {k: torch.tensor(v) for k, v in rows.items()}


def trace_text_encoder(folder, tok, model, patterns, pad_id, with_types=False):
    """Every prompt alone, then a right-padded batch (short prompt first): expected tensors
    `{kind}/{prompt}/{layer}` and `padded_{kind}/{layer}` for the short, padded row."""
    tensors, ids = {}, []
    for p, text in enumerate(PROMPTS):
        enc = tok.encode(text)
        ids.append(enc.ids)
        batch = {"input_ids": torch.tensor([enc.ids])}
        if with_types:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        for name, t in encoder_trace(model, patterns, batch).items():
            kind, layer = name.split("/")
            tensors[f"{kind}/{p}/{layer}"] = t
    batch = padded_batch([tok.encode("short one."), tok.encode(PROMPTS[0])], pad_id, with_types)
    for name, t in encoder_trace(model, patterns, batch).items():
        tensors[f"padded_{name}"] = t
    save(folder, tensors, {"prompts": PROMPTS, "token_ids": ids,
                           "padded_ids": batch["input_ids"][0].tolist(),
                           "padded_mask": batch["attention_mask"][0].tolist()})


def roberta_tokenizer():
    """Byte-level BPE with RoBERTa's special tokens (<s>=0, <pad>=1, </s>=2) and post-processor."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def unigram_tokenizer():
    """A SentencePiece-style Unigram vocabulary with XLM-R's special tokens (<s>=0, <pad>=1,
    </s>=2, <unk>=3)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=250, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok


def make_roberta(name, config_class, model_class, tok):
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    # 64 positions, 62 usable after the padding offset (pad_token_id = 1).
    cfg = config_class(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=64, type_vocab_size=1, pad_token_id=1,
                       bos_token_id=0, eos_token_id=2, hidden_act="gelu", attn_implementation="eager")
    model = model_class(cfg, add_pooling_layer=False).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    trace_text_encoder(folder, tok, model, BERT_LIKE, pad_id=1)


def make_roberta_family():
    from transformers import RobertaConfig, RobertaModel, XLMRobertaConfig, XLMRobertaModel
    make_roberta("tiny-roberta", RobertaConfig, RobertaModel, roberta_tokenizer())
    make_roberta("tiny-xlm-roberta", XLMRobertaConfig, XLMRobertaModel, unigram_tokenizer())


def make_distilbert():
    from transformers import DistilBertConfig, DistilBertModel
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings
    folder = FIXTURES / "tiny-distilbert"
    folder.mkdir(parents=True, exist_ok=True)
    tok = wordpiece_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    cfg = DistilBertConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=64, sinusoidal_pos_embds=True, activation="gelu",
                           attn_implementation="eager")
    model = DistilBertModel(cfg).eval()
    sharpen(model)
    with torch.no_grad():  # the table stays the sinusoids transformers makes, as trained models have it
        table = model.embeddings.position_embeddings.weight
        create_sinusoidal_embeddings(cfg.max_position_embeddings, cfg.dim, table)
    model.save_pretrained(folder, safe_serialization=True)
    trace_text_encoder(folder, tok, model, DISTILBERT, pad_id=0)


def make_modernbert():
    """Three layers, global / local / global (`global_attn_every_n_layers=2`), a local window of
    7 keys (`local_attention=6`: three on each side) on prompts of 12 and more tokens, and two
    RoPE bases."""
    from transformers import ModernBertConfig, ModernBertModel
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb
    folder = FIXTURES / "tiny-modernbert"
    folder.mkdir(parents=True, exist_ok=True)
    tok = roberta_tokenizer()
    cls, sep = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", cls), ("</s>", sep)])
    tok.save(str(folder / "tokenizer.json"))
    cfg = ModernBertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                           num_attention_heads=4, max_position_embeddings=64, global_attn_every_n_layers=2,
                           local_attention=6, global_rope_theta=5000.0, local_rope_theta=300.0, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2, cls_token_id=0, sep_token_id=2, hidden_activation="gelu",
                           attn_implementation="eager")
    assert cfg.layer_types == ["full_attention", "sliding_attention", "full_attention"], cfg.layer_types
    model = ModernBertModel(cfg).eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    n, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def trace(batch, row=0):
        captured, hooks = capture(model, {"qkv": r"layers\.(\d+)\.attn\.Wqkv$"})
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
            t = batch["input_ids"].shape[1]
            pos = torch.arange(t).unsqueeze(0)
            tables = {kind: model.rotary_emb(torch.zeros(1, t, d), pos, kind) for kind in set(cfg.layer_types)}
        for h in hooks:
            h.remove()
        valid = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))[row].bool()
        res = {}
        for i, a in enumerate(out.attentions):
            qkv = captured[("qkv", i)][row:row + 1].view(1, t, 3, n, d)
            q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
            cos, sin = tables[cfg.layer_types[i]]
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            allowed = valid.unsqueeze(0).expand(t, t).clone()
            if cfg.layer_types[i] == "sliding_attention":
                idx = torch.arange(t)
                allowed &= (idx[:, None] - idx[None, :]).abs() <= cfg.local_attention // 2
            mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
            res[f"attn/{i}"] = a[row]
            res[f"q/{i}"] = q[0]
            res[f"k/{i}"] = k[0]
            res[f"lse/{i}"] = lse(q[0], k[0], d ** -0.5, mask)
        return res

    tensors, ids = {}, []
    for p, text in enumerate(PROMPTS):
        enc = tok.encode(text)
        ids.append(enc.ids)
        for name, t in trace({"input_ids": torch.tensor([enc.ids])}).items():
            kind, layer = name.split("/")
            tensors[f"{kind}/{p}/{layer}"] = t
    batch = padded_batch([tok.encode("short one."), tok.encode(PROMPTS[0])], 1, False)
    for name, t in trace(batch).items():
        tensors[f"padded_{name}"] = t
    save(folder, tensors, {"prompts": PROMPTS, "token_ids": ids, "padded_ids": batch["input_ids"][0].tolist(),
                           "padded_mask": batch["attention_mask"][0].tolist(),
                           "window": cfg.local_attention // 2 + 1})


# --- vision towers -------------------------------------------------------------------------------

TOWER = {"q": r"layers\.(\d+)\.self_attn\.q_proj$", "k": r"layers\.(\d+)\.self_attn\.k_proj$"}


def tower_trace(tower, pixels, interpolate=False):
    captured, hooks = capture(tower, TOWER)
    with torch.no_grad():
        out = tower(pixel_values=pixels, output_attentions=True, output_hidden_states=True,
                    interpolate_pos_encoding=interpolate)
    for h in hooks:
        h.remove()
    n = tower.config.num_attention_heads
    assert len(out.hidden_states) == len(out.attentions) + 1
    res = {"pixels": pixels[0]}
    for i, a in enumerate(out.attentions):
        q, k = heads(captured[("q", i)], n), heads(captured[("k", i)], n)
        res[f"attn/{i}"] = a[0]
        res[f"q/{i}"] = q
        res[f"k/{i}"] = k
        res[f"lse/{i}"] = lse(q, k, 1 / math.sqrt(q.shape[-1]))
        res[f"norms/{i}"] = out.hidden_states[i + 1][0].norm(dim=-1)
    return res


def clip_preprocessor(size):
    return {"image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True, "do_resize": True,
            "size": {"shortest_edge": size}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": size, "width": size}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}


def siglip_preprocessor(size):
    return {"image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
            "do_resize": True, "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5]}


def make_tower(name, model, tower, preprocessor, size, interpolated_hw):
    """Saves `model` (a bare tower or a full two-tower model whose vision half is `tower`) and
    what the tower computes on random pixels at its trained size and, interpolating its position
    embeddings, at `interpolated_hw`."""
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    tensors = tower_trace(tower, torch.randn(1, 3, size, size))
    for k, v in tower_trace(tower, torch.randn(1, 3, *interpolated_hw), interpolate=True).items():
        tensors[f"interpolated/{k}"] = v
    # The sample photograph through transformers' own image processor and the tower.
    processor = PROCESSORS[preprocessor["image_processor_type"]]()
    image = Image.open(ASSETS / "chelsea.png").convert("RGB")
    pixels = processor(**kwargs_of(preprocessor))(image, return_tensors="pt")["pixel_values"]
    for k, v in tower_trace(tower, pixels).items():
        tensors[f"chelsea/{k}"] = v
    save(folder, tensors, {"interpolated_hw": list(interpolated_hw), "image": "chelsea.png"})


def make_towers():
    from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, SiglipConfig, SiglipModel,
                              SiglipVisionConfig, SiglipVisionModel)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  attn_implementation="eager")
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    # Trained for a 4 x 4 grid, also run on 3 x 5.
    clip = CLIPVisionModel(CLIPVisionConfig(**common, image_size=32, patch_size=8))
    make_tower("tiny-clip-vision", clip, clip, clip_preprocessor(32), 32, (24, 40))
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=dict(common, image_size=30, patch_size=10),
                                projection_dim=16, attn_implementation="eager"))
    make_tower("tiny-clip", full, full.vision_model, clip_preprocessor(30), 30, (40, 20))
    siglip = SiglipVisionModel(SiglipVisionConfig(**common, image_size=32, patch_size=8))
    make_tower("tiny-siglip-vision", siglip, siglip, siglip_preprocessor(32), 32, (40, 24))
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(common, image_size=24, patch_size=8),
                                    attn_implementation="eager"))
    make_tower("tiny-siglip", full, full.vision_model, siglip_preprocessor(24), 24, (16, 32))


def processor_classes():
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil
    return {"CLIPImageProcessor": lambda: CLIPImageProcessorPil, "CLIPFeatureExtractor": lambda: CLIPImageProcessorPil,
            "SiglipImageProcessor": lambda: SiglipImageProcessorPil}


PROCESSORS = processor_classes()
NOT_KWARGS = {"image_processor_type", "feature_extractor_type", "processor_class"}


def kwargs_of(config):
    return {k: v for k, v in config.items() if k not in NOT_KWARGS}


def make_tower_images():
    """CLIP's and SigLIP's image processors on the sample photographs: under the configurations
    openai/clip-vit-base-patch32 and google/siglip-base-patch16-224 ship (CLIP's with a bare
    number as size, which CLIP reads as the shortest edge), and under the class defaults."""
    cases = {
        "clip_openai": ("chelsea.png", {
            "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "resample": 3, "size": 224}),
        "clip_defaults": ("astronaut.png", {"image_processor_type": "CLIPImageProcessor"}),
        "siglip_google": ("coffee.png", siglip_preprocessor(224)),
        "siglip_defaults": ("chelsea.png", {"image_processor_type": "SiglipImageProcessor",
                                            "size": {"height": 96, "width": 160}}),
    }
    tensors, meta = {}, {"cases": {}}
    for name, (file, config) in cases.items():
        kind = config.get("image_processor_type") or config["feature_extractor_type"]
        image = Image.open(ASSETS / file).convert("RGB")
        pixels = PROCESSORS[kind]()(**kwargs_of(config))(image, return_tensors="pt")["pixel_values"][0]
        # Every 4th row and column: a resampling or cropping error shows all over the picture,
        # and the fixture stays small.
        tensors[name] = pixels[:, ::4, ::4]
        meta["cases"][name] = {"file": file, "config": config, "shape": list(pixels.shape), "stride": 4}
    meta["transformers"] = transformers.__version__
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              str(FIXTURES / "images" / "towers.safetensors"), metadata={"fixture": json.dumps(meta)})


FAMILIES = {"roberta": make_roberta_family, "distilbert": make_distilbert, "modernbert": make_modernbert,
            "towers": make_towers, "tower-images": make_tower_images}


def main():
    wanted = sys.argv[1:] or list(FAMILIES)
    for name in wanted:
        torch.manual_seed(0)
        FAMILIES[name]()


if __name__ == "__main__":
    main()
