"""`capture`: runs a transformers model and writes what its attention did as a headwise
session (format 2, DESIGN.md).

How q, k and the logits are caught: transformers (>= 4.48) routes every attention layer of
the model families headwise knows (Llama-like incl. Qwen/Mistral/Gemma, GPT-2, BERT-like,
ViT-like, CLIP/SigLIP, Whisper, T5, the language towers of VLMs ...) through a module-level
function `eager_attention_forward(module, query, key, value, attention_mask, ...)` of the
layer's own modeling file. Its `query` and `key` are exactly DESIGN's q and k (after RoPE and
q/k norms, before the scale; keys before grouped-query repetition), and its keyword arguments
carry the scale, soft-cap, window and any position bias. While capturing, that name is
replaced in each modeling module by a wrapper that calls the original unchanged and copies
q, k, lse (and, within the budget, the probabilities the original returned) to the host as
each layer finishes, so a model dispatched over several devices with accelerate's
`device_map` is captured with one layer's tensors in flight. The logits are rebuilt from q, k
and the call's arguments and checked against the probabilities eager returned: a layer whose
logits are not `softcap(scale q.k) + mask` with a causal/window mask (a position bias as in
T5, a bidirectional image block as in some VLMs) keeps its attention in the file and is marked,
so no reader rebuilds it wrongly. Models whose layers do not go through such a function get
attention only, from `output_attentions`.
"""
import inspect
import math
import sys
import warnings

import numpy as np

from ._format import FORMAT_VERSION, tensor_name, write_session
from .tokens import TokenText

#: `attention="auto"` keeps an input's attention while it fits this many bytes.
AUTO_BUDGET_BYTES = 256 * 1024 * 1024
#: How far the probabilities rebuilt from q, k and the call's arguments may be from those
#: eager returned before a layer counts as not rebuildable (f32; half precision is looser).
REBUILD_TOLERANCE = {"float32": 1e-4, "float64": 1e-6}
HALF_TOLERANCE = 2e-2
#: Query rows whose probabilities are checked against eager's, evenly spread.
CHECKED_ROWS = 64
#: Logits computed at once while summing lse: 64 MiB of f32.
LOGIT_BLOCK_ELEMENTS = 16 * 1024 * 1024
#: Rows of `massive/{input}/{layer}`.
MASSIVE_ROWS = 16


def capture(model, inputs, out, attention="auto", *, tokenizer=None, texts=None,
            image_processor=None, tower=None, dtype="f32", source=None, top_k=5,
            budget_bytes=AUTO_BUDGET_BYTES):
    """Runs `model` on each input and writes a format-2 session to `out`; returns it loaded.

    inputs: a string or list of strings (tokenised with `tokenizer`), a tokenizer's or
        processor's output (a dict of tensors; a batch is split into its rows, each row's
        padding dropped), a tensor of token ids or of pixel values, or a list of these.
    attention: "full" stores every layer's attention; "none" stores q, k and lse only (any
        weight is exp(z - lse)); "auto" stores an input's attention while it fits
        `budget_bytes` (256 MiB).
    tokenizer: gives token strings and special tokens (a transformers tokenizer or a
        `tokenizers.Tokenizer`); without it tokens are shown as their ids.
    image_processor: its image_mean/image_std turn pixel values back into the picture the
        model saw, stored with image inputs.
    tower: the module whose attention layers make the session; by default the encoder of an
        encoder-decoder model, the language model of a vision-language model, else the model.
    dtype: "f32" or "f16" for attn, q and k (lse and the norms are always f32).
    """
    import torch

    if attention not in ("auto", "full", "none"):
        raise ValueError(f"attention must be 'auto', 'full' or 'none', not {attention!r}")
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    store = np.float32 if dtype == "f32" else np.float16
    runs = _normalise_inputs(inputs, tokenizer, texts)
    root = tower if tower is not None else _default_tower(model)
    tok = TokenText(tokenizer) if tokenizer is not None else None

    tensors, infos, model_info, layer_infos = {}, [], None, None
    restore = _force_eager(model)
    try:
        for index, (kwargs, text) in enumerate(runs):
            seq_len = _sequence_length(kwargs)
            limit = {"full": math.inf, "none": 0, "auto": budget_bytes}[attention]
            rec = _Recorder(model, root, keep_attention_bytes=limit,
                            itemsize=np.dtype(store).itemsize)
            with rec, torch.no_grad():
                output = model(**_to_model_device(model, kwargs))
            layers = rec.layers if rec.layers else _fallback_layers(model, kwargs, root)
            if not layers:
                raise RuntimeError(
                    f"{type(model).__name__}: no attention layer was seen in the forward pass "
                    f"(capture needs eager attention)")
            info = _model_info(model, layers, source)
            if model_info is None:
                model_info, layer_infos = info, [lay.info for lay in layers]
            elif info != model_info:
                raise RuntimeError(f"input {index}: the model's layer shapes changed between inputs "
                                   f"({info} vs {model_info})")
            t = layers[0].q.shape[1] if layers[0].q is not None else layers[0].attn.shape[-1]
            if seq_len is not None and seq_len != t:
                raise RuntimeError(f"input {index}: {seq_len} input positions but the attention "
                                   f"layers saw {t} tokens")
            for l, lay in enumerate(layers):
                if lay.attn is not None:
                    tensors[tensor_name("attn", index, l)] = lay.attn.astype(store)
                if lay.q is not None:
                    tensors[tensor_name("q", index, l)] = lay.q.astype(store)
                    tensors[tensor_name("k", index, l)] = lay.k.astype(store)
                for name in ("lse", "vnorm", "norms", "massive"):
                    value = getattr(lay, name)
                    if value is not None:
                        tensors[tensor_name(name, index, l)] = value.astype(np.float32)
            input_info, picture = _input_info(model, kwargs, text, t, tok, image_processor,
                                              output, top_k)
            if picture is not None:
                tensors[tensor_name("image", index)] = picture
            infos.append(input_info)
    finally:
        restore()
    model_meta = dict(model_info)
    if all(info.get("scale") is not None for info in layer_infos):
        # Captures from output_attentions have no q, k or logits to describe.
        model_meta["attention"] = layer_infos
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model_meta,
        "inputs": infos,
        "view": None,
    }
    write_session(out, tensors, meta)
    from .session import load

    return load(out)


# ---------------------------------------------------------------------------------------------
# Inputs


def _normalise_inputs(inputs, tokenizer, texts):
    """A list of (model kwargs with batch 1, text or None)."""
    import torch

    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    texts = list(texts) if texts is not None else None
    runs = []
    for item in items:
        if isinstance(item, str):
            if tokenizer is None:
                raise ValueError("text inputs need a tokenizer= to tokenise them")
            encoded = tokenizer(item, return_tensors="pt") if callable(tokenizer) else None
            if encoded is None or not hasattr(encoded, "keys"):
                ids = tokenizer.encode(item).ids  # a tokenizers.Tokenizer
                encoded = {"input_ids": torch.tensor([ids])}
            runs.extend((row, item) for row in _rows(dict(encoded)))
        elif torch.is_tensor(item) or isinstance(item, np.ndarray):
            t = torch.as_tensor(item)
            if t.is_floating_point():
                name = "pixel_values"
                t = t if t.dim() == 4 else t.unsqueeze(0)
            else:
                name = "input_ids"
                t = t if t.dim() == 2 else t.unsqueeze(0)
            runs.extend((row, None) for row in _rows({name: t}))
        elif hasattr(item, "keys"):
            runs.extend((row, None) for row in _rows(dict(item)))
        else:
            raise TypeError(f"cannot capture an input of type {type(item).__name__}: give text, "
                            f"a tokenizer's or processor's output, or a tensor")
    if texts is not None:
        if len(texts) != len(runs):
            raise ValueError(f"{len(texts)} texts for {len(runs)} inputs")
        runs = [(kw, t) for (kw, _), t in zip(runs, texts)]
    return runs


#: Per-token tensors of a tokenizer's output, cut with the padding.
_PER_TOKEN = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "mm_token_type_ids",
              "token_type_ids", "special_tokens_mask")


def _rows(batch):
    """A batch split into batch-1 inputs, each without its padding (the keys the attention mask
    hides), so that every input's trace is the one it gets alone."""
    import torch

    batch = {k: v for k, v in batch.items() if v is not None}
    tensors = [v for v in batch.values() if torch.is_tensor(v)]
    if not tensors:
        raise ValueError("the input holds no tensors")
    size = tensors[0].shape[0]
    mask = batch.get("attention_mask")
    rows = []
    for b in range(size):
        row = {}
        keep = None
        if mask is not None and mask.dim() == 2 and not bool(mask[b].all()):
            keep = mask[b].bool()
        for k, v in batch.items():
            if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == size:
                v = v[b:b + 1]
                if keep is not None and k in _PER_TOKEN and v.dim() == 2:
                    v = v[:, keep]
            row[k] = v
        rows.append(row)
    return rows


def _sequence_length(kwargs):
    ids = kwargs.get("input_ids")
    return int(ids.shape[1]) if ids is not None else None


def _to_model_device(model, kwargs):
    """Inputs go to the device of the input embeddings (the first device of a dispatched
    model; accelerate's hooks move them on from there)."""
    import torch

    device = None
    try:
        emb = model.get_input_embeddings()
        device = next(emb.parameters()).device
    except Exception:
        pass
    if device is None:
        device = getattr(model, "device", None)
    if device is None or device.type == "meta":
        return kwargs
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kwargs.items()}


# ---------------------------------------------------------------------------------------------
# Which layers


def _default_tower(model):
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    for name, module in model.named_modules():
        if name.split(".")[-1] == "language_model":
            return module
    return model


def _force_eager(model):
    """Makes every submodel use eager attention for the capture; returns the undo."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    subs = {}
    for module in model.modules():
        c = getattr(module, "config", None)
        if c is not None and id(c) not in subs:
            subs[id(c)] = (c, getattr(c, "_attn_implementation", None))
    if all(impl in (None, "eager") for _, impl in subs.values()):
        return lambda: None
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        for c, _ in subs.values():
            c._attn_implementation = "eager"

    def restore():
        if hasattr(model, "set_attn_implementation") and before is not None:
            try:
                model.set_attn_implementation(before)
                return
            except Exception:
                pass
        for c, impl in subs.values():
            c._attn_implementation = impl

    return restore


def _layer_module_of(modules, attn_name):
    """The block (an element of an nn.ModuleList) that holds an attention module: its output
    is the residual stream after the layer. `modules`: the root's named modules."""
    import torch

    parts = attn_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:cut - 1])
        if parts[cut - 1].isdigit() and isinstance(modules.get(parent), torch.nn.ModuleList):
            return modules[".".join(parts[:cut])]
    return None


# ---------------------------------------------------------------------------------------------
# The recorder


class _Layer:
    """One attention layer's capture, on the host."""

    def __init__(self):
        self.q = self.k = self.attn = self.lse = self.vnorm = None
        self.norms = self.massive = None
        self.info = None


class _MaskLayout:
    def __init__(self):
        self.blocked = None
        self.additive = None
        self.causal = False
        self.kind = "standard"


class _Recorder:
    """Replaces `eager_attention_forward` in the modeling modules of `model` while active and
    records the calls made by attention modules inside `root`, in call order."""

    def __init__(self, model, root, keep_attention_bytes, itemsize):
        self.model, self.root = model, root
        self.keep_bytes, self.itemsize = keep_attention_bytes, itemsize
        self.kept_bytes = 0
        self.layers = []
        self.by_module = {}
        self.allowed = {id(m): name for name, m in root.named_modules()}
        self.patched = []
        self.hooks = []
        self.block_owner = {}
        self._layouts = {}

    def __enter__(self):
        self._hook_blocks()
        seen = set()
        for module in self.model.modules():
            pymod = sys.modules.get(type(module).__module__)
            if pymod is None or id(pymod) in seen:
                continue
            seen.add(id(pymod))
            original = getattr(pymod, "eager_attention_forward", None)
            if callable(original) and not getattr(original, "_headwise", False):
                wrapper = self._wrap(original)
                pymod.eager_attention_forward = wrapper
                self.patched.append((pymod, original))
        return self

    def __exit__(self, *exc):
        for pymod, original in self.patched:
            pymod.eager_attention_forward = original
        for h in self.hooks:
            h.remove()
        return False

    def _wrap(self, original):
        recorder = self
        signature = inspect.signature(original)
        names = [p for p in signature.parameters][5:]

        def eager_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
            result = original(module, query, key, value, attention_mask, *args, **kwargs)
            if id(module) in recorder.allowed and query.shape[-2] == key.shape[-2]:
                call = dict(zip(names, args))
                call.update(kwargs)
                recorder._record(module, signature, query, key, value, attention_mask, call,
                                 result[1])
            return result

        eager_attention_forward._headwise = True
        return eager_attention_forward

    def _record(self, module, signature, query, key, value, mask, call, weights):
        import torch

        if id(module) in self.by_module:
            raise RuntimeError(f"attention module {self.allowed[id(module)]} ran twice in one "
                               f"forward pass; pass the tower to capture with tower=")
        lay = _Layer()
        self.by_module[id(module)] = lay
        self.layers.append(lay)
        self.block_owner[id(module)] = lay

        q, k = query[:1].detach(), key[:1].detach()
        heads, kv_heads, t, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
        if heads % kv_heads:
            raise RuntimeError(f"{self.allowed[id(module)]}: {heads} query heads are not a "
                               f"multiple of {kv_heads} key heads")
        scaling = call.get("scaling", _default(signature, "scaling"))
        if scaling is None:
            scaling = d ** -0.5
        declared = getattr(module, "scaling", None)
        if float(scaling) == 1.0 and isinstance(declared, float) and declared not in (0.0, 1.0):
            # Whisper, OPT and kin multiply q by the scale in the projection and call the
            # attention with scaling=1.0; DESIGN's q is before any scale.
            q, scaling = q / declared, declared
        softcap = call.get("softcap", _default(signature, "softcap"))
        window = call.get("sliding_window", getattr(module, "sliding_window", None))
        window = int(window) if window else None
        bias = call.get("position_bias")
        layout = self._mask_layout(mask, t, window)
        extra_bias = bias is not None or layout.additive is not None
        qf = q[0].float()
        kf = k[0].float().repeat_interleave(heads // kv_heads, 0)
        bias = bias[0].float() if bias is not None else None

        def logits(rows):
            """z for some query rows, [heads, rows, T], in f32: DESIGN's definition plus
            whatever bias the call adds (which then makes the layer not rebuildable)."""
            z = torch.matmul(qf[:, rows], kf.transpose(-1, -2)) * float(scaling)
            if softcap:
                z = float(softcap) * torch.tanh(z / float(softcap))
            if bias is not None:
                z = z + bias[:, rows]
            if layout.additive is not None:
                z = z + layout.additive[:, rows]
            if layout.blocked is not None:
                z = z.masked_fill(layout.blocked[:, rows], float("-inf"))
            return z

        # lse exactly, a block of query rows at a time (no [heads, T, T] buffer beside eager's).
        lse = torch.empty(heads, t, device=qf.device)
        step = max(1, LOGIT_BLOCK_ELEMENTS // max(heads * t, 1))
        for start in range(0, t, step):
            lse[:, start:start + step] = torch.logsumexp(logits(slice(start, start + step)), dim=-1)
        # The probabilities eager returned, checked on a sample of rows against exp(z - lse).
        sample = torch.unique(torch.linspace(0, t - 1, min(t, CHECKED_ROWS), device=qf.device).long())
        rebuilt = torch.exp(logits(sample) - lse[:, sample].unsqueeze(-1))
        tolerance = REBUILD_TOLERANCE.get(str(q.dtype).replace("torch.", ""), HALF_TOLERANCE)
        if weights is not None:
            w = weights[:1].detach()
            exact = float((rebuilt - w[0][:, sample].float()).abs().max()) <= tolerance
        else:  # an eager function that returns no probabilities: ours are its formula's
            w = torch.cat([torch.exp(logits(slice(r, r + step)) - lse[:, r:r + step, None])
                           for r in range(0, t, step)], dim=1).unsqueeze(0)
            exact = True
        mask_kind, causal = layout.kind, layout.causal
        lse = lse.unsqueeze(0)
        rebuildable = exact and not extra_bias and mask_kind == "standard"

        attn_bytes = heads * t * t * self.itemsize
        if not rebuildable:
            lay.attn = w[0].float().cpu().numpy()  # the only exact copy: always kept
        elif self.kept_bytes + attn_bytes <= self.keep_bytes:
            lay.attn = w[0].float().cpu().numpy()
            self.kept_bytes += attn_bytes
        else:
            self._drop_rebuildable_attention()
        lay.q = q[0].float().cpu().numpy()
        lay.k = k[0].float().cpu().numpy()
        lay.lse = lse[0].cpu().numpy()
        if value is not None and value.dim() == 4:
            lay.vnorm = value[:1].detach().float().norm(dim=-1)[0].cpu().numpy()
        lay.info = {
            "scale": float(scaling),
            "softcap": float(softcap) if softcap else None,
            "window": window,
            "rope": _uses_rope(module),
            "causal": causal,
        }
        if not rebuildable:
            reasons = []
            if extra_bias:
                reasons.append("a position bias added to the logits")
            if mask_kind != "standard":
                reasons.append("a mask other than causal/window")
            if not exact and not reasons:
                reasons.append("logits other than softcap(scale q.k) + mask")
            lay.info["rebuild"] = False
            if not exact and not extra_bias and mask_kind == "standard":
                warnings.warn(f"{self.allowed[id(module)]}: the probabilities rebuilt from q, k "
                              f"and the call's arguments differ from eager's; its attention is "
                              f"stored and marked not rebuildable")
            lay.info["why"] = "; ".join(reasons)

    def _mask_layout(self, mask, t, window):
        """What the call's mask does, worked out once per mask (the layers of a forward pass
        share one): which keys it blocks ([1 or heads, T, T]), any finite values it adds
        (ALiBi and the like), whether it is causal, and whether it is DESIGN's standard mask
        (causal and/or the layer's window) or something else (a VLM's image block)."""
        import torch

        key = (id(mask), None if mask is None else mask.data_ptr(), t, window)
        if key in self._layouts:
            return self._layouts[key][1]
        layout = _MaskLayout()
        if mask is None:
            layout.kind = "custom" if window else "standard"
        else:
            m = mask[0][..., :t, :t]
            if m.dtype == torch.bool:
                blocked = ~m
            else:
                floor = torch.finfo(m.dtype).min / 2 if m.is_floating_point() else -1e30
                blocked = m <= floor
                finite = torch.where(blocked, torch.zeros((), dtype=m.dtype, device=m.device), m)
                if bool((finite != 0).any()):
                    layout.additive = finite.float()
            layout.blocked = blocked
            upper = torch.ones(t, t, dtype=torch.bool, device=blocked.device).triu(1)
            layout.causal = t > 1 and bool(blocked[:, upper].all())
            expected = _standard_mask(t, layout.causal, window, blocked.device)
            if not bool((blocked == expected).all()):
                layout.kind = "custom"
        # The mask itself is kept in the key's tuple's company so its id is not reused.
        self._layouts[key] = (mask, layout)
        return layout

    def _drop_rebuildable_attention(self):
        """Past the budget an input keeps no rebuildable attention at all, so that its layers
        are alike (the viewer rebuilds them all from q, k and lse)."""
        for lay in self.layers:
            if lay.attn is not None and lay.info is not None and lay.info.get("rebuild", True):
                self.kept_bytes -= lay.attn.size * self.itemsize
                lay.attn = None
        self.keep_bytes = 0

    def _hook_blocks(self):
        """Hooks on every block (an element of an nn.ModuleList holding an attention module),
        registered before the forward pass: each block's output is the residual stream after
        its layer (`norms`, `massive`)."""
        import torch

        # A model whose attention modules sit in no nn.ModuleList (no stack of layers to hook)
        # gets no hook: its session has no `norms` or `massive`, as there is no module whose
        # output is the residual stream after one layer.
        owners = {}
        modules = dict(self.root.named_modules())
        for name, module in modules.items():
            if "Attention" in type(module).__name__:
                block = _layer_module_of(modules, name)
                if block is not None:
                    owners.setdefault(id(block), (block, []))[1].append(id(module))
        for block, attention_modules in owners.values():
            self.hooks.append(block.register_forward_hook(self._after_block(attention_modules)))

    def _after_block(self, attention_modules):
        import torch

        def after(_module, _inputs, output):
            lay = next((self.block_owner[a] for a in attention_modules if a in self.block_owner), None)
            h = output[0] if isinstance(output, (tuple, list)) else output
            if lay is None or lay.norms is not None or not torch.is_tensor(h) or h.dim() != 3:
                return
            h = h[0].detach().float()
            lay.norms = h.norm(dim=-1).cpu().numpy()
            lay.massive = _massive(h)

        return after


def _massive(h):
    """`massive` of a hidden state h [T, hidden]: f32 [16, 3] rows (token, channel, signed
    value) of its entries of largest |value|, largest first, ties by the smaller flat index
    token * hidden + channel; rows past T * hidden entries are (-1, -1, 0)."""
    import torch

    flat = h.reshape(-1)
    size = flat.abs()
    k = min(MASSIVE_ROWS, flat.numel())
    massive = np.tile(np.array([-1.0, -1.0, 0.0], np.float32), (MASSIVE_ROWS, 1))
    if k == 0:
        return massive
    # topk's order among equal values is unspecified: take every entry at or above the k-th
    # largest (in flat order) and sort those stably.
    threshold = torch.topk(size, k).values[-1]
    candidates = torch.nonzero(size >= threshold).flatten()
    top = candidates[torch.sort(size[candidates], descending=True, stable=True).indices[:k]]
    rows = torch.stack([(top // h.shape[1]).float(), (top % h.shape[1]).float(), flat[top].float()], dim=1)
    massive[:k] = rows.cpu().numpy()
    return massive


def _default(signature, name):
    p = signature.parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _standard_mask(t, causal, window, device):
    """True where DESIGN's mask blocks a key: later keys if causal, keys `window` or more
    positions away if the layer has a window (the engine's reading: key j is visible to query i
    only when |i - j| < window; in a causal layer, the keys before it)."""
    import torch

    i = torch.arange(t, device=device).unsqueeze(1)
    j = torch.arange(t, device=device).unsqueeze(0)
    blocked = torch.zeros(t, t, dtype=torch.bool, device=device)
    if causal:
        blocked |= j > i
    if window:
        blocked |= (i - j).abs() >= window
    return blocked


def _uses_rope(module):
    """Rotary layers take the rotary embedding as an argument; SmolLM3 and Llama 4 mark their
    NoPE layers with `use_rope`."""
    try:
        takes = "position_embeddings" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        takes = False
    return bool(takes and getattr(module, "use_rope", True))


def _fallback_layers(model, kwargs, root):
    """Attention only, from `output_attentions`, for models that do not route through an
    eager attention function."""
    import torch

    with torch.no_grad():
        out = model(**_to_model_device(model, kwargs), output_attentions=True)
    attentions = getattr(out, "attentions", None) or getattr(out, "encoder_attentions", None)
    layers = []
    for a in attentions or ():
        lay = _Layer()
        lay.attn = a[0].detach().float().cpu().numpy()
        lay.info = {"scale": None}
        layers.append(lay)
    return layers


# ---------------------------------------------------------------------------------------------
# Metadata


def _model_info(model, layers, source):
    config = getattr(model, "config", None)
    shapes = {(l.q.shape[0], l.k.shape[0], l.q.shape[2]) if l.q is not None
              else (l.attn.shape[0], l.attn.shape[0], 0) for l in layers}
    lengths = {l.q.shape[1] if l.q is not None else l.attn.shape[-1] for l in layers}
    if len(shapes) != 1 or len(lengths) != 1:
        raise RuntimeError(
            f"the attention layers seen differ in shape (heads, kv_heads, head_dim: "
            f"{sorted(shapes)}; tokens: {sorted(lengths)}): a session needs one shape for every "
            f"layer; pick the stack to capture with tower= (e.g. tower=model.vision_model)")
    heads, kv_heads, head_dim = shapes.pop()
    if source is None:
        source = getattr(config, "_name_or_path", "") or type(model).__name__
    return {
        "source": str(source),
        "type": getattr(config, "model_type", None) or type(model).__name__,
        "layers": len(layers),
        "heads": int(heads),
        "kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
    }


def _input_info(model, kwargs, text, t, tok, image_processor, output, top_k):
    """The input's metadata and, for an image, the picture as the model saw it."""
    ids = kwargs.get("input_ids")
    if ids is not None:
        ids = [int(i) for i in ids[0].tolist()]
        info = {"kind": "text"}
        if text is None and tok is not None:
            text = tok.decode(ids)
        if text is not None:
            info["text"] = text
        info["tokens"] = [tok.display(i) for i in ids] if tok else [str(i) for i in ids]
        info["token_ids"] = ids
        special = [p for p, i in enumerate(ids) if tok and tok.is_special(i)]
        image_ids = _image_token_ids(model)
        image_positions = [p for p, i in enumerate(ids) if i in image_ids]
        if image_positions:
            info["image_tokens"] = image_positions
        info["next_tokens"] = _next_tokens(model, output, tok, top_k)
        info["special_tokens"] = special
        return info, None
    pixels = kwargs.get("pixel_values")
    if pixels is not None and pixels.dim() == 4:
        layout = _patch_layout(model, pixels, t)
        if layout is not None:
            return _image_info(model, pixels, layout, t, image_processor, output, top_k)
    # Audio frames (Whisper), or anything else: one token per position.
    features = kwargs.get("input_features")
    if features is not None:
        seconds = 30.0 * (features.shape[-1] / 3000.0) / t if t else 0.0
        tokens = [f"{p * seconds:.2f}s" for p in range(t)]
    else:
        tokens = [f"[{p}]" for p in range(t)]
    return {"kind": "text", "tokens": tokens, "token_ids": list(range(t))}, None


def _image_token_ids(model):
    config = getattr(model, "config", None)
    ids = set()
    for name in ("image_token_id", "image_token_index", "video_token_id", "video_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= 0:
            ids.add(value)
    return ids


def _next_tokens(model, output, tok, top_k):
    """Decoders: the most likely tokens after the input (softmax of the last position's
    logits)."""
    import torch

    config = getattr(model, "config", None)
    logits = getattr(output, "logits", None)
    can_generate = getattr(model, "can_generate", None)
    decoder = getattr(config, "is_decoder", False) or bool(callable(can_generate) and can_generate())
    if (logits is None or logits.dim() != 3 or not decoder
            or getattr(config, "is_encoder_decoder", False)):
        return []
    probs = torch.softmax(logits[0, -1].double(), -1)
    values, indices = torch.topk(probs, min(top_k, probs.numel()))
    return [{"id": int(i), "token": tok.display(int(i)) if tok else str(int(i)), "prob": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())]


def _patch_size(model):
    config = getattr(model, "config", None)
    for c in (getattr(config, "vision_config", None), config):
        p = getattr(c, "patch_size", None)
        if p is not None:
            return (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))
    return None


def _patch_layout(model, pixels, t):
    patch = _patch_size(model)
    if patch is None:
        return None
    rows, cols = pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1]
    prefix = t - rows * cols
    return ((rows, cols), prefix, patch) if prefix >= 0 else None


def _image_info(model, pixels, layout, t, image_processor, output, top_k):
    import torch

    (rows, cols), prefix, patch = layout
    config = getattr(model, "config", None)
    names = ["[CLS]"] + (["[DIST]"] if getattr(config, "model_type", "") == "deit" else [])
    tokens = names[:prefix] + [f"[REG{r}]" for r in range(max(prefix - len(names), 0))]
    tokens += [f"({r},{c})" for r in range(rows) for c in range(cols)]
    info = {
        "kind": "image",
        "image": "pixel_values",
        "tokens": tokens,
        "token_ids": list(range(t)),
        "patch_grid": [rows, cols],
        "prefix_tokens": prefix,
        "patch_size": [patch[0], patch[1]],
        "special_tokens": list(range(prefix)),
    }
    logits = getattr(output, "logits", None)
    if logits is not None and logits.dim() == 2:
        labels = getattr(config, "id2label", {}) or {}
        probs = torch.softmax(logits[0].double(), -1)
        values, indices = torch.topk(probs, min(top_k, probs.numel()))
        info["next_tokens"] = [{"id": int(i), "token": str(labels.get(int(i), f"class {int(i)}")),
                                "prob": float(p)} for p, i in zip(values.tolist(), indices.tolist())]
    return info, _picture(pixels[0], image_processor)


def _picture(pixels, image_processor):
    """u8 [height, width, 3]: the normalised pixel values undone with the processor's mean and
    std (without a processor, each channel stretched to 0..255: for display only)."""
    x = pixels.detach().float().cpu().numpy()
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    x = x[:3]
    mean = getattr(image_processor, "image_mean", None)
    std = getattr(image_processor, "image_std", None)
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32).reshape(-1, 1, 1) + np.asarray(mean, np.float32).reshape(-1, 1, 1)
        x = x * 255.0
    else:
        lo = x.min(axis=(1, 2), keepdims=True)
        hi = x.max(axis=(1, 2), keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()
