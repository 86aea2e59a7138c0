"""`headwise.load`: attention rows and blocks rebuilt from q, k and lse equal the attention
eager transformers computed (stored alongside by attention="full"), for causal, grouped-query,
bidirectional, windowed and soft-capped layers; layers whose logits q, k and lse cannot give
keep their attention; "auto" keeps attention within its budget only; bad files are clear
errors."""
import numpy as np
import pytest
import torch

import headwise
from conftest import PROMPTS, assert_close, fixture, tokenizer_of

TOL = 1e-5


def rebuilt_equals_stored(model, inputs, tmp_path, **kwargs):
    full = headwise.capture(model, inputs, out=tmp_path / "full.safetensors", attention="full", **kwargs)
    bare = headwise.capture(model, inputs, out=tmp_path / "none.safetensors", attention="none", **kwargs)
    assert not any(n.startswith("attn/") for n in bare.keys()), "attention='none' stores no attention"
    for i in range(len(full.inputs)):
        t = len(full.tokens(i))
        for layer in range(full.layers):
            assert not bare.has_attention(layer, i)
            stored = full[f"attn/{i}/{layer}"]
            for head in range(full.heads):
                for query in range(t):
                    assert_close(bare.attention_row(layer, head, query, input=i), stored[head, query], TOL,
                                 f"input {i} layer {layer} head {head} query {query}")
                block = bare.attention_block(layer, head, queries=slice(1, t), keys=slice(0, t - 1), input=i)
                assert_close(block, stored[head, 1:, :t - 1], TOL, "block")
    return full, bare


def test_rows_rebuilt_from_q_k_lse_equal_the_stored_attention_for_a_grouped_query_decoder(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fixture("tiny-llama"), attn_implementation="eager").eval()
    full, _ = rebuilt_equals_stored(model, PROMPTS, tmp_path, tokenizer=tokenizer_of(fixture("tiny-llama")))
    assert full.model["kv_heads"] < full.model["heads"]
    assert all(a["causal"] and a["rope"] for a in full.model["attention"])


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_rows_rebuilt_equal_the_stored_attention_for_bert_and_gpt2(name, tmp_path):
    import transformers

    cls = transformers.AutoModel if name == "tiny-bert" else transformers.AutoModelForCausalLM
    model = cls.from_pretrained(fixture(name), attn_implementation="eager").eval()
    full, _ = rebuilt_equals_stored(model, PROMPTS[:1], tmp_path, tokenizer=tokenizer_of(fixture(name)))
    assert all(a["causal"] == (name == "tiny-gpt2") for a in full.model["attention"])


def test_sliding_windows_and_soft_capping_are_rebuilt_exactly(tmp_path):
    """A tiny random Gemma 2: every other layer slides a 3-token window, logits soft-capped,
    the scale from query_pre_attn_scalar."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=3,
                          attn_logit_softcapping=5.0, query_pre_attn_scalar=16, max_position_embeddings=64,
                          attn_implementation="eager")
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20)  # peaky logits, so the soft-cap bites
    ids = torch.tensor([[2, 5, 9, 11, 17, 23, 29, 31, 37, 41]])
    full, _ = rebuilt_equals_stored(model, ids, tmp_path)
    attention = full.model["attention"]
    assert [a["window"] for a in attention] == [3, None]
    assert all(a["softcap"] == 5.0 and a["scale"] == pytest.approx(16 ** -0.5) for a in attention)
    assert full["attn/0/0"][0, 9, :7].max() == 0.0, "the window hides keys three or more back"


def test_a_vit_is_rebuilt_exactly(tmp_path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(fixture("tiny-vit"), attn_implementation="eager").eval()
    torch.manual_seed(1)
    rebuilt_equals_stored(model, torch.randn(1, 3, 32, 32), tmp_path)


def test_a_position_bias_keeps_the_attention_even_when_none_is_asked(tmp_path):
    """T5 adds a learned position bias to the logits: q, k and lse cannot give its attention,
    so the layer keeps it and says why, and rows come from it."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                    attn_implementation="eager")).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 1]])
    with torch.no_grad():
        expected = model(input_ids=ids, output_attentions=True).attentions
    s = headwise.capture(model, ids, out=tmp_path / "t5.safetensors", attention="none")
    for layer, a in enumerate(s.model["attention"]):
        assert a["rebuild"] is False and "position bias" in a["why"]
        assert s.has_attention(layer)
        assert_close(s.attention_row(layer, 2, 3), expected[layer][0, 2, 3], TOL, f"layer {layer}")


def test_auto_keeps_attention_only_within_its_budget(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fixture("tiny-llama"), attn_implementation="eager").eval()
    tok = tokenizer_of(fixture("tiny-llama"))
    t = len(tok(PROMPTS[0]).input_ids)
    one_input = 2 * 4 * t * t * 4  # layers × heads × T × T × f32
    within = headwise.capture(model, PROMPTS[:1], tokenizer=tok, out=tmp_path / "a.safetensors",
                              budget_bytes=one_input)
    beyond = headwise.capture(model, PROMPTS[:1], tokenizer=tok, out=tmp_path / "b.safetensors",
                              budget_bytes=one_input - 1)
    assert within.has_attention(0) and within.has_attention(1)
    assert not beyond.has_attention(0) and not beyond.has_attention(1)
    assert_close(beyond.attention(1), within.attention(1), TOL, "rebuilt layer 1")


def test_f16_sessions_store_half_precision_attention_q_and_k(tmp_path):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(fixture("tiny-bert"), attn_implementation="eager").eval()
    tok = tokenizer_of(fixture("tiny-bert"))
    s = headwise.capture(model, PROMPTS[:1], tokenizer=tok, out=tmp_path / "h.safetensors", attention="full",
                         dtype="f16")
    assert s["attn/0/0"].dtype == np.float16 and s["q/0/0"].dtype == np.float16
    assert s["lse/0/0"].dtype == np.float32


def test_a_file_that_is_not_a_session_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(headwise.SessionError, match="not a safetensors file"):
        headwise.load(bad)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(headwise.SessionError, match="not a headwise session"):
        headwise.load(tmp_path / "plain.safetensors")
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "new.safetensors"),
              metadata={"headwise": '{"format_version": 99}'})
    with pytest.raises(headwise.SessionError, match="newer headwise"):
        headwise.load(tmp_path / "new.safetensors")


def test_rows_of_a_session_written_by_the_engine_read_its_stored_attention(headwise_bin, tmp_path):
    from conftest import trace

    path = trace(headwise_bin, fixture("tiny-gpt2"), tmp_path / "rust.safetensors", texts=PROMPTS[:1])
    s = headwise.load(path)
    assert_close(s.attention_row(1, 2, 4), s["attn/0/1"][2, 4], 0.0, "row")


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_clip_and_siglip_vision_towers_are_captured_as_images(family, tmp_path):
    """CLIP puts a class token before the patches, SigLIP none; both rebuild exactly."""
    import transformers

    torch.manual_seed(0)
    kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=16, patch_size=4)
    if family == "clip":
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**kwargs))
    else:
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**kwargs))
    model.config._attn_implementation = "eager"
    full, _ = rebuilt_equals_stored(model.eval(), torch.randn(1, 3, 16, 16), tmp_path)
    info = full.inputs[0]
    assert info["kind"] == "image" and info["patch_grid"] == [4, 4]
    assert info["prefix_tokens"] == (1 if family == "clip" else 0)
    assert full["image/0"].shape == (16, 16, 3)


def test_a_bidirectional_sliding_window_is_rebuilt_exactly(tmp_path):
    """ModernBERT's local layers see keys fewer than `window` positions away on both sides."""
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, local_attention=4, global_attn_every_n_layers=2,
                              pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
                              attn_implementation="eager")
    model = ModernBertModel(config).eval()
    full, _ = rebuilt_equals_stored(model, torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12, 2]]), tmp_path)
    assert [a["window"] for a in full.model["attention"]] == [None, 3]
    assert not any(a["causal"] for a in full.model["attention"])
    row = full["attn/0/1"][0, 5]
    assert row[3:8].min() > 0 and row[:3].max() == 0 and row[8:].max() == 0
