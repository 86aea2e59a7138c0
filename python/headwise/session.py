"""`load`: a headwise session file (format 1 or 2) as numpy arrays and its metadata, with
attention rows and blocks rebuilt from q, k and lse where the file stores no attention.

The rebuild is DESIGN's definition, exactly: for query head h (key head h // (heads /
kv_heads)), z_ij = softcap(scale * q_i . k_j) + mask_ij, where the mask blocks later keys in a
causal layer and keys `window` or more positions away in a windowed one (|i - j| >= window),
and the weight is exp(z_ij - lse_i).
"""
import json
import os

import numpy as np

from ._format import FORMAT_VERSION, METADATA_KEY, tensor_name


class SessionError(ValueError):
    """A file that is not a session this package can read, or a request it cannot answer."""


def load(path):
    """Opens a session file; tensors are read when first asked for."""
    return Session(path)


class Session:
    def __init__(self, path):
        from safetensors import safe_open

        self.path = os.fspath(path)
        try:
            self._file = safe_open(self.path, framework="numpy")
        except Exception as e:  # safetensors raises its own error types
            raise SessionError(f"{self.path}: not a safetensors file, or truncated or corrupt ({e})") from e
        raw = (self._file.metadata() or {}).get(METADATA_KEY)
        if raw is None:
            raise SessionError(f"{self.path}: no '{METADATA_KEY}' metadata: not a headwise session")
        try:
            self.meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SessionError(f"{self.path}: metadata is not JSON ({e})") from e
        version = self.meta.get("format_version")
        if not isinstance(version, int):
            raise SessionError(f"{self.path}: metadata has no format_version")
        if version > FORMAT_VERSION:
            raise SessionError(f"{self.path}: written by a newer headwise (format {version}; "
                               f"this package reads up to {FORMAT_VERSION})")
        self._names = set(self._file.keys())
        self._cache = {}

    # -- metadata ---------------------------------------------------------------------------

    @property
    def model(self):
        return self.meta["model"]

    @property
    def inputs(self):
        return self.meta["inputs"]

    @property
    def layers(self):
        return self.model["layers"]

    @property
    def heads(self):
        return self.model["heads"]

    def tokens(self, input=0):
        return self.inputs[input]["tokens"]

    def layer_attention_info(self, layer):
        """The layer's {"scale", "softcap", "window", "rope", ...} (format 2), or None."""
        per_layer = self.model.get("attention")
        return per_layer[layer] if per_layer else None

    # -- tensors ----------------------------------------------------------------------------

    def keys(self):
        return sorted(self._names)

    def __contains__(self, name):
        return name in self._names

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(f"{self.path} has no tensor {name}")
        if name not in self._cache:
            self._cache[name] = self._file.get_tensor(name)
        return self._cache[name]

    def tensors(self):
        """Every tensor, by name (reads the whole file)."""
        return {name: self[name] for name in self.keys()}

    def q(self, layer, input=0):
        return self[tensor_name("q", input, layer)]

    def k(self, layer, input=0):
        return self[tensor_name("k", input, layer)]

    def lse(self, layer, input=0):
        return self[tensor_name("lse", input, layer)]

    def has_attention(self, layer, input=0):
        return tensor_name("attn", input, layer) in self._names

    # -- attention --------------------------------------------------------------------------

    def attention(self, layer, input=0):
        """[heads, T, T]: stored, or rebuilt from q, k and lse."""
        name = tensor_name("attn", input, layer)
        if name in self._names:
            return self[name].astype(np.float32)
        return np.stack([self.attention_block(layer, h, input=input) for h in range(self.heads)])

    def attention_row(self, layer, head, query, input=0):
        """[T]: how query token `query` of head `head` attends to every key."""
        t = len(self.tokens(input))
        if not -t <= query < t:
            raise SessionError(f"no query {query}: input {input} has {t} tokens")
        return self.attention_block(layer, head, queries=[query % t], input=input)[0]

    def attention_block(self, layer, head, queries=None, keys=None, input=0):
        """[len(queries), len(keys)] of head `head`'s attention; `queries` and `keys` are slices
        or index arrays (all tokens by default)."""
        t = len(self.tokens(input))
        rows = np.arange(t)[queries if queries is not None else slice(None)]
        cols = np.arange(t)[keys if keys is not None else slice(None)]
        if not 0 <= layer < self.layers or not 0 <= head < self.heads:
            raise SessionError(f"no layer {layer}, head {head} (the model has {self.layers} "
                               f"layers of {self.heads} heads)")
        name = tensor_name("attn", input, layer)
        if name in self._names:
            return self[name][head][np.ix_(rows, cols)].astype(np.float32)
        return self._rebuild(layer, head, rows, cols, input)

    def _rebuild(self, layer, head, rows, cols, input):
        info = self.layer_attention_info(layer)
        for prefix in ("q", "k", "lse"):
            if tensor_name(prefix, input, layer) not in self._names:
                raise SessionError(f"{self.path}: layer {layer} of input {input} has no attention "
                                   f"and no {prefix} to rebuild it from")
        if info is None:
            raise SessionError(f"{self.path}: layer {layer} has no attention and the file does "
                               f"not say how the layer computes its logits (model.attention)")
        if info.get("rebuild") is False:
            raise SessionError(f"{self.path}: layer {layer}'s attention cannot be rebuilt from q, "
                               f"k and lse ({info.get('why', 'marked so')}) and is not stored")
        q = self.q(layer, input).astype(np.float64)
        k = self.k(layer, input).astype(np.float64)
        lse = self.lse(layer, input).astype(np.float64)
        group = q.shape[0] // k.shape[0]
        z = q[head, rows] @ k[head // group, cols].T * info["scale"]
        if info.get("softcap"):
            c = info["softcap"]
            z = c * np.tanh(z / c)
        causal = info.get("causal")
        if causal is None:
            causal = self._looks_causal(layer, input, info)
        i, j = rows[:, None], cols[None, :]
        blocked = np.zeros(z.shape, bool)
        if causal:
            blocked |= j > i
        if info.get("window"):
            blocked |= np.abs(i - j) >= info["window"]
        z[blocked] = -np.inf
        return np.exp(z - lse[head, rows][:, None]).astype(np.float32)

    def _looks_causal(self, layer, input, info):
        """Files that do not say (format 2 as the Rust engine writes it): in a causal layer the
        first query sees only itself, so its lse is its own logit in every head."""
        q, k, lse = self.q(layer, input), self.k(layer, input), self.lse(layer, input)
        if q.shape[1] < 2:
            return False
        group = q.shape[0] // k.shape[0]
        own = np.array([float(q[h, 0].astype(np.float64) @ k[h // group, 0]) for h in range(q.shape[0])])
        own = own * info["scale"]
        if info.get("softcap"):
            own = info["softcap"] * np.tanh(own / info["softcap"])
        return bool(np.allclose(own, lse[:, 0], atol=1e-4, rtol=1e-5))

    def __repr__(self):
        m = self.model
        return (f"<headwise session {self.path}: {m.get('type')} {m.get('layers')} layers × "
                f"{m.get('heads')} heads, {len(self.inputs)} input(s)>")
