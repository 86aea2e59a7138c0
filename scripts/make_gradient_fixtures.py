#!/usr/bin/env python3
"""Reference values for the gradient figures (head importance, gradient x attention and Chefer's
relevance map), from Hugging Face transformers' autograd (eager attention, float32), for the
committed model fixtures: each fixture folder gets `gradients.safetensors` beside its
`expected.safetensors`, which this script only reads.

Run by a developer when fixtures are made or transformers changes (needs torch, transformers,
safetensors; gguf for SmolLM2); never at test time.
Usage: python3 scripts/make_gradient_fixtures.py [--real-models DIR] [--only NAME]
where DIR (default /root/.cache/headwise/models) holds minilm/, smollm2/ and dinov2-s/ as
`headwise models fetch` lays them out, and NAME is a fixture folder name (e.g. tiny-llama,
minilm).

Models, loading and inputs are those of scripts/make_extreme_token_fixtures.py: the same class
per fixture (eager attention, float32, eval mode, batch 1) and input 0 of expected.safetensors:
for text fixtures `token_ids[0]` of its "fixture" metadata (no padding); for image fixtures its
`pixels` tensor as pixel_values. Every run is checked to give the attention stored in
expected.safetensors for that input to 1e-4 (same model, same input).

Target (a scalar), per model:
- Decoders (every *ForCausalLM, GPT2LMHeadModel, Gemma3ForConditionalGeneration's text, the real
  smollm2): kind "token": target = log_softmax(final logits at the LAST position, as
  transformers returns them, i.e. after any final soft-capping)[id], id = the argmax of those
  logits (the most likely next token).
- Image classifiers (tiny-vit, tiny-deit, tiny-dinov2 = Dinov2ForImageClassification): kind
  "class": target = log_softmax(the model's output logits[0])[id], id = the argmax.
- Models without a head (tiny-bert, tiny-roberta, tiny-xlm-roberta, tiny-distilbert,
  tiny-modernbert, tiny-dinov2-registers, real minilm, real dinov2-s): kind "embedding":
  target = h[0] . e[p], where h = last_hidden_state (transformers' output: e.g. Dinov2Model's is
  after its final layernorm, ModernBertModel's after final_norm) and e = hidden_states[0] from
  output_hidden_states=True (the input to the first layer), e DETACHED (a constant).
  id = p = argmax over positions 1..T-1 of h[0] . e[p] (computed once without grad; ties go to
  the smaller p).
- Not done: CLIP and SigLIP (tiny-clip-vision, tiny-clip, tiny-siglip-vision, tiny-siglip; no
  target is defined for them), and the SKIPPED folders below (tiny-dinov2-onnx, tiny-gguf).

Gates and importance: a gate xi[l, h] = 1.0 (requires_grad, float32) multiplies head h's
attention output of layer l, the context softmax(z) V of that head, before the attention output
projection: a forward pre-hook on each layer's attention output projection (o_proj, GPT-2's
attn.c_proj (not the MLP's c_proj), BERT's attention.output.dense, DistilBERT's out_lin,
ModernBERT's attn.Wo, the ViT family's attention.o_proj) views its input [B, T, heads*head_dim]
as [B, T, heads, head_dim] and multiplies it by xi[l] per head.
`importance` f32 [layers, heads] = |d target / d xi[l, h]| (absolute value).

Gradient x attention: for each layer, A = the attention probabilities [heads, T, T] exactly as
used in the product with V (the weights tensor the modeling module's `eager_attention_forward`
returns, on which the spy calls retain_grad()). `grad_attn/{layer}` f32 [heads, T, T] =
(d target / d A) * A, elementwise. Gates and attention gradients come from ONE backward pass.
Each run checks that every layer's A got a gradient, and that for every layer and head
sum_ij grad_attn[l][h, i, j] equals the signed d target / d xi[l, h] (the identity that holds
when A is the tensor multiplied by V and the context reaches the gated projection unchanged);
for the tiny models a float64 copy also checks the float32 gate gradients (to 1e-3 of the
largest) and the most important gate's derivative by central differences (Richardson-
extrapolated, to 2e-4 relative).

Relevance (Chefer et al. 2021, "Generic Attention-model Explainability", the self-attention
rule), see `chefer_relevance`: R = identity [T, T] in float64; for each layer l = 0..L-1 in
order: A_bar_l = mean over heads of clamp(grad_attn[l], min=0) (in float64 from the f32
grad_attn); R = R + A_bar_l @ R. `relevance` f32 [T] = R[row], row = T-1 for kind "token",
0 for "class" and "embedding".

All gradients are float32 as the model runs. File contents:
- `importance` f32 [layers, heads]; `relevance` f32 [T];
- `grad_attn/{layer}` f32 [heads, T, T] for every layer of the tiny fixtures; for the real
  models only for layers 0, L//2 and L-1 (dinov2-s: 0 and L-1 only, to keep the repository
  small), listed in the metadata;
- metadata "gradients" = JSON {"kind": "token"|"class"|"embedding", "id": int, "value": the
  target's value, "row": int, "layers_stored": [...], "input": 0, "tokens": T}; and "fixture" =
  JSON provenance (versions, class, weights).
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
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How far the attention of each run may be from expected.safetensors' (the check that model and
#: input are the same): SmolLM2's 30 layers drift by 2e-5 across thread counts and versions.
ATTENTION_TOLERANCE = 1e-4

TEXT, IMAGE = "text", "image"
TOKEN, CLASS, EMBEDDING = "token", "class", "embedding"
# folder -> (model class, extra from_pretrained arguments, the tower run (attribute path, "" for
# the model), the layer list inside the tower ("a|b": the first path that exists), input kind,
# target kind). Classes and paths as in make_extreme_token_fixtures.py.
MODELS = {
    "tiny-bert": ("BertModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT, EMBEDDING),
    "tiny-roberta": ("RobertaModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT, EMBEDDING),
    "tiny-xlm-roberta": ("XLMRobertaModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT, EMBEDDING),
    "tiny-distilbert": ("DistilBertModel", {}, "", "transformer.layer", TEXT, EMBEDDING),
    "tiny-modernbert": ("ModernBertModel", {}, "", "layers", TEXT, EMBEDDING),
    "tiny-gpt2": ("GPT2LMHeadModel", {}, "", "transformer.h", TEXT, TOKEN),
    "tiny-llama": ("LlamaForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-llama3": ("LlamaForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-llama-linear": ("LlamaForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-qwen2": ("Qwen2ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-qwen2-window": ("Qwen2ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-qwen3": ("Qwen3ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-mistral": ("MistralForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-mistral-window": ("MistralForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-phi3": ("Phi3ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-smollm3": ("SmolLM3ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-gemma": ("GemmaForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-gemma2": ("Gemma2ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    "tiny-gemma3-text": ("Gemma3ForCausalLM", {}, "", "model.layers", TEXT, TOKEN),
    # The multimodal folder, text only: headwise reads its text tower; the logits are the LM's.
    "tiny-gemma3": ("Gemma3ForConditionalGeneration", {}, "", "model.language_model.layers", TEXT, TOKEN),
    "tiny-vit": ("ViTForImageClassification", {}, "", "vit.layers|vit.encoder.layer", IMAGE, CLASS),
    "tiny-deit": ("DeiTForImageClassificationWithTeacher", {}, "", "deit.layers|deit.encoder.layer", IMAGE, CLASS),
    "tiny-dinov2": ("Dinov2ForImageClassification", {}, "", "dinov2.encoder.layer", IMAGE, CLASS),
    "tiny-dinov2-registers": ("Dinov2WithRegistersModel", {}, "", "encoder.layer", IMAGE, EMBEDDING),
    # Real models: the fixture folder is tests/fixtures/real/NAME, the weights under --real-models.
    "minilm": ("BertModel", {"add_pooling_layer": False}, "", "encoder.layer", TEXT, EMBEDDING),
    # SmolLM2's only local copy is the GGUF file its expected.safetensors was made from,
    # dequantised by transformers' GGUF loader as make_fixtures.py loads it.
    "smollm2": ("LlamaForCausalLM", {"gguf_file": SMOLLM2_GGUF}, "", "model.layers", TEXT, TOKEN),
    "dinov2-s": ("Dinov2Model", {}, "", "encoder.layer", IMAGE, EMBEDDING),
}
REAL = {"minilm", "smollm2", "dinov2-s"}
#: Layers whose grad_attn is stored for the real models (None: every layer, the tiny fixtures).
#: dinov2-s (T = 257) keeps only the first and the last: three layers would be 4.8 MB.
REAL_LAYERS = {"minilm": "0,mid,last", "smollm2": "0,mid,last", "dinov2-s": "0,last"}
SKIPPED = {"tiny-dinov2-onnx": "ONNX only (same model as tiny-dinov2)",
           "tiny-gguf": "GGUF files of tiny-llama / tiny-llama3 without a Hugging Face folder",
           "tiny-clip-vision": "CLIP: no gradient target defined",
           "tiny-clip": "CLIP: no gradient target defined",
           "tiny-siglip-vision": "SigLIP: no gradient target defined",
           "tiny-siglip": "SigLIP: no gradient target defined"}
#: The attention output projection, as a module path inside a layer (the first that exists).
OUTPUT_PROJECTIONS = ("self_attn.o_proj", "attention.o_proj", "attn.c_proj", "attention.output.dense",
                      "attention.out_lin", "attn.Wo")


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


def chefer_relevance(grad_attn, row):
    """The reference implementation of Chefer's rule (self-attention): grad_attn is the list of
    f32 [heads, T, T] tensors (dtarget/dA * A), layer 0 first; returns R[row] as f32 [T]."""
    t = grad_attn[0].shape[-1]
    r = torch.eye(t, dtype=torch.float64)
    for g in grad_attn:
        a_bar = g.double().clamp(min=0).mean(dim=0)
        r = r + a_bar @ r
    return r[row].float()


class Attention:
    """Replaces `eager_attention_forward` in every modeling module of `model` while active and
    keeps, per call made by an attention module inside `tower`, the probabilities it returned
    (the tensor multiplied by V), with retain_grad() called on them."""

    def __init__(self, model, tower):
        self.model = model
        self.inside = {id(m) for m in tower.modules()}
        self.weights, self.patched = [], []

    def __enter__(self):
        seen = set()
        for module in self.model.modules():
            pymod = sys.modules.get(type(module).__module__)
            if pymod is None or id(pymod) in seen or not callable(getattr(pymod, "eager_attention_forward", None)):
                continue
            seen.add(id(pymod))
            original = pymod.eager_attention_forward

            def spy(attn, query, key, value, *args, _original=original, **kwargs):
                inside = id(attn) in self.inside
                if inside and torch.is_grad_enabled() and not query.requires_grad:
                    # The first layer's probabilities depend on nothing that requires grad (the
                    # weights do not): a leaf copy of the query makes them part of the graph.
                    query = query.detach().requires_grad_(True)
                result = _original(attn, query, key, value, *args, **kwargs)
                if inside:
                    weights = result[1]
                    if weights is not None and weights.requires_grad:
                        weights.retain_grad()
                    self.weights.append(weights)
                return result

            pymod.eager_attention_forward = spy
            self.patched.append((pymod, original))
        return self

    def __exit__(self, *exc):
        for pymod, original in self.patched:
            pymod.eager_attention_forward = original


def heads_of(model):
    config = getattr(model.config, "text_config", None) or model.config
    return config.num_attention_heads


def output_projection(layer):
    for path in OUTPUT_PROJECTIONS:
        try:
            return attr(layer, path)
        except AttributeError:
            pass
    raise AttributeError(f"no attention output projection in {type(layer).__name__}")


def gate_hooks(layers, gates):
    """Forward pre-hooks multiplying each layer's attention output projection input
    [B, T, heads*head_dim], per head, by gates[l] [heads]."""
    hooks = []
    for l, layer in enumerate(layers):
        def pre(_module, args, kwargs, l=l):
            x = args[0]
            b, t, width = x.shape
            heads = gates.shape[1]
            gated = (x.view(b, t, heads, width // heads) * gates[l].view(1, 1, heads, 1)).view(b, t, width)
            return (gated,) + tuple(args[1:]), kwargs
        hooks.append(output_projection(layer).register_forward_pre_hook(pre, with_kwargs=True))
    return hooks


def attribute(model, tower, layers, inputs, kind):
    """One forward and ONE backward pass of `tower` on `inputs` (batch 1). Returns a dict:
    target (float), id, row, gate_grad (signed) and importance [layers, heads], the attention
    probabilities and grad_attn (dtarget/dA * A) per layer [heads, T, T], relevance [T], and
    e0 (hidden_states[0], or None) with the first layer's input."""
    dtype = next(model.parameters()).dtype
    gates = torch.ones(len(layers), heads_of(model), dtype=dtype, requires_grad=True)
    hooks = gate_hooks(layers, gates)
    first_input = {}

    def catch_first(_module, args, kwargs):
        first_input.setdefault("x", (args[0] if args else kwargs["hidden_states"]).detach())

    hooks.append(layers[0].register_forward_pre_hook(catch_first, with_kwargs=True))
    kwargs = dict(inputs)
    if kind == EMBEDDING:
        kwargs["output_hidden_states"] = True
    parameters = inspect.signature(tower.forward).parameters
    if "use_cache" in parameters:
        kwargs["use_cache"] = False
    if kind == TOKEN and "logits_to_keep" in parameters:
        kwargs["logits_to_keep"] = 1  # only the last position's logits: the same values, less work
    try:
        with Attention(model, tower) as rec, torch.enable_grad():
            out = tower(**kwargs)
            if kind in (TOKEN, CLASS):
                logits = out.logits[0, -1] if kind == TOKEN else out.logits[0]
                logp = torch.log_softmax(logits, dim=-1)
                index = int(torch.argmax(logits.detach()))
                target = logp[index]
                row = None
                e0 = None
            else:
                h = out.last_hidden_state[0]
                e0 = out.hidden_states[0][0].detach()
                with torch.no_grad():
                    scores = e0[1:] @ h[0]
                index = 1 + int(torch.argmax(scores))  # the first maximum: ties go to the smaller p
                target = torch.dot(h[0], e0[index])
                row = 0
            target.backward()
    finally:
        for hook in hooks:
            hook.remove()
    assert len(rec.weights) == len(layers), (len(rec.weights), len(layers))
    t = rec.weights[0].shape[-1]
    if row is None:
        row = t - 1 if kind == TOKEN else 0
    attention, grad_attn = [], []
    for l, a in enumerate(rec.weights):
        assert a is not None and a.grad is not None, f"layer {l}: the attention probabilities got no gradient"
        assert a.shape[0] == 1 and a.shape[1] == gates.shape[1], (l, a.shape, gates.shape)
        attention.append(a.detach()[0])
        grad_attn.append((a.grad * a.detach())[0])
    gate_grad = gates.grad.detach().clone()
    return {"target": float(target.detach()), "id": index, "row": row, "tokens": t, "gate_grad": gate_grad,
            "importance": gate_grad.abs(), "attention": attention, "grad_attn": grad_attn,
            "relevance": chefer_relevance(grad_attn, row), "e0": e0, "first_input": first_input.get("x")}


def fixture_input(expected_path, kind):
    """Input 0 of expected.safetensors as model inputs, and metadata describing it."""
    with safe_open(str(expected_path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("fixture", "{}"))
        if kind == TEXT:
            ids = meta["token_ids"][0]
            return {"input_ids": torch.tensor([ids])}, {"token_ids": ids}
        pixels = f.get_tensor("pixels")
    return {"pixel_values": pixels.unsqueeze(0)}, {
        "pixels": "the `pixels` tensor of expected.safetensors (image 0), as pixel_values",
        "pixel_shape": list(pixels.shape)}


def finite_difference_check(model, tower_path, layers_path, inputs, kind, res, name):
    """On a float64 copy: the gate derivative of the most important head by central differences
    (the target's id fixed to the float32 run's) against float64 autograd, and float64 autograd
    against the float32 run's gate gradients."""
    import copy
    m64 = copy.deepcopy(model).double()
    tower, layers = attr(m64, tower_path), attr(attr(m64, tower_path), layers_path)
    inputs64 = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    res64 = attribute(m64, tower, layers, inputs64, kind)
    assert res64["id"] == res["id"], f"{name}: float64 picks id {res64['id']}, float32 {res['id']}"
    scale = float(res64["gate_grad"].abs().max())
    err = float((res64["gate_grad"] - res["gate_grad"].double()).abs().max())
    assert err <= 1e-3 * scale + 1e-6, f"{name}: float32 gate gradients {err:.3g} from float64's"
    l, h = divmod(int(res64["importance"].argmax()), res64["importance"].shape[1])

    def target_at(delta):
        gates = torch.ones(len(layers), heads_of(m64), dtype=torch.float64)
        gates[l, h] += delta
        hooks = gate_hooks(layers, gates)
        kwargs = dict(inputs64, output_hidden_states=True) if kind == EMBEDDING else dict(inputs64)
        if "use_cache" in inspect.signature(tower.forward).parameters:
            kwargs["use_cache"] = False
        try:
            with torch.no_grad():
                out = tower(**kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if kind == TOKEN:
            return float(torch.log_softmax(out.logits[0, -1], -1)[res["id"]])
        if kind == CLASS:
            return float(torch.log_softmax(out.logits[0], -1)[res["id"]])
        return float(torch.dot(out.last_hidden_state[0][0], out.hidden_states[0][0][res["id"]]))

    # Most eager functions keep the softmax float32 (and rotary tables are float32) inside the
    # float64 copy, so small steps drown in that rounding (1e-5: errors of 4e-3): steps of 1e-2
    # and 5e-3, Richardson-extrapolated (the eps^2 terms cancel), agree to 2e-5 relative.
    def central(eps):
        return (target_at(eps) - target_at(-eps)) / (2 * eps)

    numeric = (4 * central(5e-3) - central(1e-2)) / 3
    analytic = float(res64["gate_grad"][l, h])
    assert abs(numeric - analytic) <= 2e-4 * abs(analytic) + 1e-6, (name, l, h, numeric, analytic)
    return l, h, numeric, analytic


def stored_layers(name, n):
    if name not in REAL:
        return list(range(n))
    choice = {"0": 0, "mid": n // 2, "last": n - 1}
    return sorted({choice[k] for k in REAL_LAYERS[name].split(",")})


def make(name, real_models):
    cls_name, load_args, tower_path, layers_path, input_kind, kind = MODELS[name]
    folder = FIXTURES / "real" / name if name in REAL else FIXTURES / name
    weights = Path(real_models) / name if name in REAL else folder
    if not weights.exists():
        print(f"{name}: skipped, no weights at {weights}")
        return
    model = getattr(transformers, cls_name).from_pretrained(
        weights, attn_implementation="eager", dtype=torch.float32, **load_args).eval()
    model.requires_grad_(False)
    tower = attr(model, tower_path)
    layers = attr(tower, layers_path)
    expected_path = folder / "expected.safetensors"
    inputs, input_meta = fixture_input(expected_path, input_kind)
    res = attribute(model, tower, layers, inputs, kind)

    # The same model and input as expected.safetensors.
    worst = 0.0
    with safe_open(str(expected_path), "pt") as f:
        for l, a in enumerate(res["attention"]):
            key = f"attn/0/{l}" if input_kind == TEXT else f"attn/{l}"
            if key in f.keys():
                worst = max(worst, float((a - f.get_tensor(key)).abs().max()))
    assert worst <= ATTENTION_TOLERANCE, f"{name}: attention differs from expected.safetensors' by {worst:.3g}"
    if kind == EMBEDDING:
        assert torch.equal(res["e0"], res["first_input"][0]), f"{name}: hidden_states[0] is not the first layer's input"

    # The retained gradients are those of the probabilities multiplied by V: per layer and head,
    # sum_ij dtarget/dA * A = sum over the context of dtarget/dcontext * context = dtarget/dxi.
    gate_grad = res["gate_grad"]
    sums = torch.stack([g.double().sum(dim=(-1, -2)) for g in res["grad_attn"]])
    identity_err = float((sums - gate_grad.double()).abs().max())
    scale = float(gate_grad.abs().max())
    assert identity_err <= 1e-4 * scale + 1e-6, f"{name}: sum(grad_attn) differs from the gate gradient by {identity_err:.3g}"
    fd = ""
    if name not in REAL:
        l, h, numeric, analytic = finite_difference_check(model, tower_path, layers_path, inputs, kind, res, name)
        fd = f"; float64 central difference at L{l} H{h}: {numeric:.6g} vs autograd {analytic:.6g}"

    keep = stored_layers(name, len(layers))
    tensors = {"importance": res["importance"].float(), "relevance": res["relevance"]}
    for l in keep:
        tensors[f"grad_attn/{l}"] = res["grad_attn"][l].float()
    gradients = {"kind": kind, "id": res["id"], "value": res["target"], "row": res["row"],
                 "layers_stored": keep, "input": 0, "tokens": res["tokens"]}
    provenance = {"transformers": transformers.__version__, "torch": torch.__version__, "model_class": cls_name,
                  "weights": f"{name} under --real-models" + (f" ({SMOLLM2_GGUF})" if name == "smollm2" else "")
                  if name in REAL else "this folder", "tower": tower_path or None, "layers": layers_path,
                  "layer_count": len(layers), **input_meta}
    path = folder / "gradients.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"gradients": json.dumps(gradients), "fixture": json.dumps(provenance)})
    print(f"{name}: kind {kind}, id {res['id']}, value {res['target']:.6g}, T {res['tokens']}, "
          f"{len(layers)} layers x {gate_grad.shape[1]} heads, layers stored {keep if name in REAL else 'all'}; "
          f"attention within {worst:.2g} of expected's; sum(grad_attn) = dtarget/dxi within {identity_err:.2g}"
          f"{fd}; {path.stat().st_size} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models", default="/root/.cache/headwise/models",
                    help="folder holding minilm/, smollm2/ and dinov2-s/ as fetched by headwise")
    ap.add_argument("--only", help="one fixture folder name to redo (e.g. tiny-llama, minilm)")
    args = ap.parse_args()
    # Chefer's rule on a hand-worked case: one layer, one head, T = 2.
    r = chefer_relevance([torch.tensor([[[0.5, -1.0], [0.25, 0.75]]])], 1)
    assert torch.allclose(r, torch.tensor([0.25, 1.75])), r
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
