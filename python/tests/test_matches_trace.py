"""A session captured by the Python package from a tiny fixture equals the one `headwise
trace` writes for the same model and input: tokens, token ids, special tokens, next tokens,
and every layer's attention, q and k to 1e-5."""
import pytest

import headwise
from conftest import PROMPTS, assert_close, fixture, tokenizer_of, trace

TOL = 1e-5


def compare(ours, theirs, image=False):
    assert ours.model["layers"] == theirs.model["layers"]
    for key in ("heads", "kv_heads", "head_dim", "type"):
        assert ours.model[key] == theirs.model[key], key
    assert len(ours.inputs) == len(theirs.inputs)
    for i, (a, b) in enumerate(zip(ours.inputs, theirs.inputs)):
        for key in ("kind", "tokens", "token_ids", "special_tokens", "patch_grid", "prefix_tokens",
                    "patch_size"):
            # The engine leaves empty lists out.
            empty = [] if key == "special_tokens" else None
            assert a.get(key, empty) == b.get(key, empty), f"input {i}: {key} {a.get(key)} vs {b.get(key)}"
        assert [n["id"] for n in a.get("next_tokens", [])] == [n["id"] for n in b.get("next_tokens", [])]
        assert [n["token"] for n in a.get("next_tokens", [])] == [n["token"] for n in b.get("next_tokens", [])]
        assert_close([n["prob"] for n in a.get("next_tokens", [])],
                     [n["prob"] for n in b.get("next_tokens", [])], TOL, f"input {i} next-token probabilities")
        for layer in range(ours.layers):
            assert_close(ours.attention(layer, i), theirs.attention(layer, i), TOL, f"input {i} attn {layer}")
            assert_close(ours.q(layer, i), theirs.q(layer, i), TOL, f"input {i} q {layer}")
            assert_close(ours.k(layer, i), theirs.k(layer, i), TOL, f"input {i} k {layer}")
        if image:
            # The picture as the model saw it: the processor's normalisation undone, to a
            # rounding step.
            assert_close(ours[f"image/{i}"].astype(int), theirs[f"image/{i}"].astype(int), 1, f"image {i}")


def by_architecture(name):
    """The fixture's model class as its config.json names it (heads included)."""
    import json

    import transformers

    architecture = json.loads((fixture(name) / "config.json").read_text())["architectures"][0]
    return getattr(transformers, architecture).from_pretrained(fixture(name), attn_implementation="eager").eval()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert"])
def test_text_models_equal_headwise_trace(name, headwise_bin, tmp_path):
    model = by_architecture(name)
    ours = headwise.capture(model, PROMPTS, tokenizer=tokenizer_of(fixture(name)),
                            out=tmp_path / "py.safetensors", attention="full")
    theirs = headwise.load(trace(headwise_bin, fixture(name), tmp_path / "rust.safetensors", texts=PROMPTS))
    compare(ours, theirs)
    assert ours.inputs[0]["text"] == PROMPTS[0]


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-deit", "tiny-dinov2", "tiny-dinov2-registers"])
def test_image_models_equal_headwise_trace(name, headwise_bin, tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor

    picture = fixture("images") / "small.png"
    processor = AutoImageProcessor.from_pretrained(fixture(name))
    model = by_architecture(name)
    pixels = processor(Image.open(picture).convert("RGB"), return_tensors="pt")
    ours = headwise.capture(model.eval(), pixels, image_processor=processor, out=tmp_path / "py.safetensors",
                            attention="full")
    theirs = headwise.load(trace(headwise_bin, fixture(name), tmp_path / "rust.safetensors", images=[picture]))
    compare(ours, theirs, image=True)


def test_a_padded_batch_gives_each_row_its_own_trace(headwise_bin, tmp_path):
    """A tokenizer's padded batch is split into rows and each row's padding dropped: the
    session is the one of the prompts run one at a time."""
    from transformers import AutoModel

    tok = tokenizer_of(fixture("tiny-bert"))
    tok.pad_token = "[PAD]"
    bert = AutoModel.from_pretrained(fixture("tiny-bert"), attn_implementation="eager").eval()
    batch = tok(["short one.", PROMPTS[0]], padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel(), "the batch is padded"
    ours = headwise.capture(bert, batch, tokenizer=tok, out=tmp_path / "py.safetensors", attention="full")
    theirs = headwise.load(trace(headwise_bin, fixture("tiny-bert"), tmp_path / "rust.safetensors",
                                 texts=["short one.", PROMPTS[0]]))
    compare(ours, theirs)
