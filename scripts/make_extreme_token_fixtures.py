#!/usr/bin/env python3
"""Reference values for the per-layer "extreme token" figures (value norms, hidden-state norms
and massive activations), from Hugging Face transformers (eager attention, float32), for every
committed model fixture: each fixture folder gets `extreme.safetensors` beside its
`expected.safetensors`, which this script only reads.

Run by a developer when fixtures are made or transformers changes (needs torch, transformers,
safetensors; gguf for SmolLM2); never at test time.
Usage: python3 scripts/make_extreme_token_fixtures.py [--real-models DIR] [--only NAME]
where DIR (default /root/.cache/headwise/models) holds minilm/, smollm2/ and dinov2-s/ as
`headwise models fetch` lays them out, and NAME is a fixture folder name (e.g. tiny-llama,
minilm).

Inputs are exactly those of expected.safetensors: for text fixtures the `token_ids` of its
"fixture" metadata, one prompt at a time (batch 1, no padding); for image fixtures its `pixels`
tensor as pixel_values (image 0; the towers' extra `chelsea/` and `interpolated/` inputs, and
the encoders' padded batches, are not redone). Each model is loaded as the script that made its
fixture loads it (same class, eager attention, float32).

Definitions (DESIGN.md), with `{prompt}` the input (prompt or image) and `{layer}` the layer,
both from 0 as in expected.safetensors:
- `vnorm/{prompt}/{layer}` f32 [kv_heads, T]: the L2 norm over head_dim of each value vector as
  it enters the attention product (after the value projection and its bias, split per kv head,
  before grouped-query repetition): caught as the `value` argument of the modeling module's
  `eager_attention_forward` (GPT-2 included), and checked against the value projection's output.
- `norms/{prompt}/{layer}` f32 [T]: the L2 norm over the hidden dimension of each token's hidden
  state output by layer `layer` (the layer module's output, the residual stream after it; not
  after any final norm), caught with a forward hook on the layer module.
- `massive/{prompt}/{layer}` f32 [16, 3]: the 16 entries of that hidden state [T, hidden] with
  the largest absolute value, as rows (token index, channel index, signed value), largest
  |value| first, ties broken by the smaller flat index token * hidden + channel. When
  T * hidden < 16 the remaining rows are (-1, -1, 0).
Norms are computed in float64 from the float32 tensors, then stored as f32. Each run is checked
to give the attention stored in expected.safetensors (same model, same inputs), and the value
norms to equal those of the value projection's output split per head.
"""
import argparse
import inspect
import json
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MASSIVE_ROWS = 16
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How far the attention of each run may be from expected.safetensors' (the check that model and
#: inputs are the same): SmolLM2's 30 layers drift by 2e-5 across thread counts and versions.
ATTENTION_TOLERANCE = 1e-4

# folder -> (model class, extra from_pretrained arguments, the tower run (attribute path, "" for
# the model), the layer list inside the tower ("a|b": the first path that exists, as module
# names moved between transformers versions), input kind). Classes as the fixture scripts load
# or build them.
TEXT, IMAGE = "text", "image"
MODELS = {
    "tiny-bert": ("BertModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT),
    "tiny-roberta": ("RobertaModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT),
    "tiny-xlm-roberta": ("XLMRobertaModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT),
    "tiny-distilbert": ("DistilBertModel", {}, "", "transformer.layer", TEXT),
    "tiny-modernbert": ("ModernBertModel", {}, "", "layers", TEXT),
    "tiny-gpt2": ("GPT2LMHeadModel", {}, "", "transformer.h", TEXT),
    "tiny-llama": ("LlamaForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-llama3": ("LlamaForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-llama-linear": ("LlamaForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-qwen2": ("Qwen2ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-qwen2-window": ("Qwen2ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-qwen3": ("Qwen3ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-mistral": ("MistralForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-mistral-window": ("MistralForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-phi3": ("Phi3ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-smollm3": ("SmolLM3ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-gemma": ("GemmaForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-gemma2": ("Gemma2ForCausalLM", {}, "", "model.layers", TEXT),
    "tiny-gemma3-text": ("Gemma3ForCausalLM", {}, "", "model.layers", TEXT),
    # The multimodal folder, text only: headwise reads its text tower.
    "tiny-gemma3": ("Gemma3ForConditionalGeneration", {}, "", "model.language_model.layers", TEXT),
    "tiny-vit": ("ViTForImageClassification", {}, "", "vit.layers|vit.encoder.layer", IMAGE),
    "tiny-deit": ("DeiTForImageClassificationWithTeacher", {}, "", "deit.layers|deit.encoder.layer", IMAGE),
    "tiny-dinov2": ("Dinov2ForImageClassification", {}, "", "dinov2.encoder.layer", IMAGE),
    "tiny-dinov2-registers": ("Dinov2WithRegistersModel", {}, "", "encoder.layer", IMAGE),
    "tiny-clip-vision": ("CLIPVisionModel", {}, "", "encoder.layers|vision_model.encoder.layers", IMAGE),
    "tiny-clip": ("CLIPModel", {}, "vision_model", "encoder.layers", IMAGE),
    "tiny-siglip-vision": ("SiglipVisionModel", {}, "", "encoder.layers|vision_model.encoder.layers", IMAGE),
    "tiny-siglip": ("SiglipModel", {}, "vision_model", "encoder.layers", IMAGE),
    # Real models: the fixture folder is tests/fixtures/real/NAME, the weights under --real-models.
    "minilm": ("BertModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT),
    # SmolLM2's only local copy is the GGUF file its expected.safetensors was made from,
    # dequantised by transformers' GGUF loader as make_fixtures.py loads it.
    "smollm2": ("LlamaForCausalLM", {"gguf_file": SMOLLM2_GGUF}, "", "model.layers", TEXT),
    "dinov2-s": ("Dinov2Model", {}, "", "encoder.layer", IMAGE),
}
REAL = {"minilm", "smollm2", "dinov2-s"}
# Not models transformers loads from a folder: tiny-dinov2-onnx (ONNX only; the same weights
# as tiny-dinov2) and tiny-gguf (GGUF files of tiny-llama, no config.json).
SKIPPED = {"tiny-dinov2-onnx": "ONNX only (same model as tiny-dinov2)",
           "tiny-gguf": "GGUF files of tiny-llama / tiny-llama3 without a Hugging Face folder"}


def attr(obj, path):
    if "|" in path:
        for alternative in path.split("|"):
            try:
                return attr(obj, alternative)
            except AttributeError:
                pass
        raise AttributeError(f"none of {path} in {type(obj).__name__}")
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def massive(h):
    """[16, 3] rows (token, channel, value) of the largest |h| entries of h [T, hidden]: largest
    first, ties by the smaller flat index; (-1, -1, 0) rows when h has fewer than 16 entries."""
    flat = h.reshape(-1)
    a = flat.abs()
    k = min(MASSIVE_ROWS, flat.numel())
    threshold = torch.topk(a, k).values[-1]
    candidates = torch.nonzero(a >= threshold).flatten()  # ascending flat index
    order = torch.sort(a[candidates], descending=True, stable=True).indices[:k]
    top = candidates[order]
    out = torch.tensor([[-1.0, -1.0, 0.0]] * MASSIVE_ROWS)
    out[:k, 0] = (top // h.shape[1]).float()
    out[:k, 1] = (top % h.shape[1]).float()
    out[:k, 2] = flat[top].float()
    return out


def check_massive():
    """The tie rule and the padding, on a state too small for 16 rows."""
    rows = massive(torch.tensor([[1.0, -3.0], [3.0, 0.0]]))
    assert rows.tolist() == [[0, 1, -3], [1, 0, 3], [0, 0, 1], [1, 1, 0]] + [[-1, -1, 0]] * 12, rows


class Values:
    """Replaces `eager_attention_forward` in every modeling module of `model` while active and
    keeps, per call made by an attention module inside `tower`, its `value` argument
    ([batch, kv_heads, T, head_dim]) and the probabilities eager returned."""

    def __init__(self, model, tower):
        self.model = model
        self.inside = {id(m) for m in tower.modules()}
        self.values, self.weights, self.patched = [], [], []

    def __enter__(self):
        seen = set()
        for module in self.model.modules():
            pymod = sys.modules.get(type(module).__module__)
            if pymod is None or id(pymod) in seen or not callable(getattr(pymod, "eager_attention_forward", None)):
                continue
            seen.add(id(pymod))
            original = pymod.eager_attention_forward

            def spy(attn, query, key, value, *args, _original=original, **kwargs):
                result = _original(attn, query, key, value, *args, **kwargs)
                if id(attn) in self.inside:
                    self.values.append(value.detach().clone())
                    self.weights.append(result[1].detach().clone() if result[1] is not None else None)
                return result

            pymod.eager_attention_forward = spy
            self.patched.append((pymod, original))
        return self

    def __exit__(self, *exc):
        for pymod, original in self.patched:
            pymod.eager_attention_forward = original


def projection_vnorm(kv_heads, head_dim, captured):
    """The value vectors' norms [kv_heads, T] rebuilt from the value projection's output (hooked
    as `captured[name]`), or None when the layer has no projection recognised here."""
    for name, out in captured.items():
        leaf = name.rsplit(".", 1)[-1]
        x = out[0]  # [T, width]
        if leaf in ("v_proj", "value", "v_lin"):
            v = x
        elif leaf == "c_attn":  # GPT-2: q, k, v side by side
            v = x[:, 2 * x.shape[1] // 3:]
        elif leaf == "qkv_proj":  # Phi-3: q, then k, then v
            v = x[:, x.shape[1] - kv_heads * head_dim:]
        elif leaf == "Wqkv":  # ModernBERT: [T, 3, heads, d]
            v = x.view(x.shape[0], 3, kv_heads, head_dim)[:, 2].reshape(x.shape[0], -1)
        else:
            continue
        return v.reshape(v.shape[0], kv_heads, head_dim).double().norm(dim=-1).T
    return None


def trace(model, tower, layers, inputs):
    """Runs `tower` on one input: per layer the value norms, the layer outputs, the attention,
    the hidden_states transformers returns, and the value norms rebuilt from projections."""
    outputs, hooks, projections = {}, [], [{} for _ in layers]
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda _m, _in, out, i=i: outputs.setdefault(i, (out[0] if isinstance(out, (tuple, list)) else out)
                                                         .detach().clone())))
        for name, sub in layer.named_modules():
            if name.rsplit(".", 1)[-1] in ("v_proj", "value", "v_lin", "c_attn", "qkv_proj", "Wqkv"):
                hooks.append(sub.register_forward_hook(
                    lambda _m, _in, out, i=i, name=name: projections[i].__setitem__(name, out.detach().clone())))
    kwargs = dict(inputs, output_hidden_states=True)
    if "use_cache" in inspect.signature(tower.forward).parameters:
        kwargs["use_cache"] = False
    try:
        with Values(model, tower) as rec, torch.no_grad():
            out = tower(**kwargs)
    finally:
        for h in hooks:
            h.remove()
    assert len(rec.values) == len(layers) == len(outputs), (len(rec.values), len(layers), len(outputs))
    return rec, [outputs[i] for i in range(len(layers))], out.hidden_states, projections


def fixture_inputs(expected_path, kind):
    """(list of model inputs, metadata describing them) from expected.safetensors."""
    with safe_open(str(expected_path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("fixture", "{}"))
        if kind == TEXT:
            ids = meta["token_ids"]
            return [{"input_ids": torch.tensor([row])} for row in ids], {"token_ids": ids}
        pixels = f.get_tensor("pixels")
    return [{"pixel_values": pixels.unsqueeze(0)}], {
        "pixels": "the `pixels` tensor of expected.safetensors (image 0), as pixel_values",
        "pixel_shapes": [list(pixels.shape)]}


def expected_tensor(f, name):
    return f.get_tensor(name) if name in f.keys() else None


def make(name, real_models):
    cls_name, load_args, tower_path, layers_path, kind = MODELS[name]
    folder = FIXTURES / "real" / name if name in REAL else FIXTURES / name
    weights = Path(real_models) / name if name in REAL else folder
    if not weights.exists():
        print(f"{name}: skipped, no weights at {weights}")
        return None
    model = getattr(transformers, cls_name).from_pretrained(
        weights, attn_implementation="eager", dtype=torch.float32, **load_args).eval()
    tower = attr(model, tower_path)
    layers = attr(tower, layers_path)
    expected_path = folder / "expected.safetensors"
    runs, input_meta = fixture_inputs(expected_path, kind)
    tensors, notes, worst = {}, {"projection_checked": 0, "hidden_states_differ": set()}, 0.0
    with safe_open(str(expected_path), "pt") as f:
        for p, inputs in enumerate(runs):
            rec, outs, hidden_states, projections = trace(model, tower, layers, inputs)
            for l, (value, h) in enumerate(zip(rec.values, outs)):
                value, h = value[0], h[0]  # [kv_heads, T, d], [T, hidden]
                vnorm = value.double().norm(dim=-1)
                rebuilt = projection_vnorm(value.shape[0], value.shape[2], projections[l])
                if rebuilt is not None:
                    assert torch.allclose(rebuilt, vnorm, rtol=1e-6, atol=1e-6), f"{name} layer {l}: v_proj vs eager value"
                    notes["projection_checked"] += 1
                # The inputs and the model are the ones expected.safetensors was made with.
                attn_name = f"attn/{p}/{l}" if kind == TEXT else f"attn/{l}"
                stored = expected_tensor(f, attn_name)
                if stored is not None:
                    worst = max(worst, float((rec.weights[l][0] - stored).abs().max()))
                stored = expected_tensor(f, f"norms/{l}") if kind == IMAGE else None
                if stored is not None:
                    assert torch.allclose(h.norm(dim=-1), stored, rtol=1e-5), f"{name}: norms/{l} differs"
                if hidden_states is not None and not torch.equal(hidden_states[l + 1][0], h):
                    notes["hidden_states_differ"].add(l)
                tensors[f"vnorm/{p}/{l}"] = vnorm.float()
                tensors[f"norms/{p}/{l}"] = h.double().norm(dim=-1).float()
                tensors[f"massive/{p}/{l}"] = massive(h)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "model_class": cls_name,
            "weights": f"{name} under --real-models" + (f" ({SMOLLM2_GGUF})" if name == "smollm2" else "")
            if name in REAL else "this folder", "tower": tower_path or None, "layers": layers_path,
            "massive_rows": MASSIVE_ROWS, "massive_padding": [-1, -1, 0], **input_meta}
    assert worst <= ATTENTION_TOLERANCE, f"{name}: attention differs from expected.safetensors' by {worst:.3g}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "extreme.safetensors"),
              metadata={"fixture": json.dumps(meta)})
    differ = sorted(notes["hidden_states_differ"])
    print(f"{name}: {len(runs)} input(s) x {len(layers)} layers, vnorm {list(tensors['vnorm/0/0'].shape)}; "
          f"v checked against the projection in {notes['projection_checked']} layer runs; "
          f"hidden_states[l + 1] != layer output at layers {differ}; attention within {worst:.2g} of expected's")
    return differ


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models", default="/root/.cache/headwise/models",
                    help="folder holding minilm/, smollm2/ and dinov2-s/ as fetched by headwise")
    ap.add_argument("--only", help="one fixture folder name to redo (e.g. tiny-llama, minilm)")
    args = ap.parse_args()
    check_massive()
    names = [args.only] if args.only else list(MODELS)
    for name in names:
        if name in SKIPPED:
            print(f"{name}: skipped, {SKIPPED[name]}")
            continue
        if name not in MODELS:
            sys.exit(f"unknown fixture {name!r}; known: {', '.join(MODELS)}")
        make(name, args.real_models)
    if not args.only:
        unknown = [d.name for d in FIXTURES.glob("tiny-*") if d.name not in MODELS and d.name not in SKIPPED]
        assert not unknown, f"fixtures this script does not know: {unknown}"


if __name__ == "__main__":
    main()
