"""Families the native engine does not implement, captured from transformers: a tiny random
Whisper (its encoder over audio frames) and a tiny vision-language model's language tower
(image tokens marked). Their sessions rebuild exactly."""
import numpy as np
import pytest
import torch

import headwise
from conftest import assert_close

TOL = 1e-5


def tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, num_mel_bins=8, encoder_layers=2, encoder_attention_heads=4,
                           decoder_layers=1, decoder_attention_heads=4, d_model=32, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=16, max_target_positions=16,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                           attn_implementation="eager")
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model


def whisper_session(path, attention="none"):
    model = tiny_whisper()
    features = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3))
    inputs = {"input_features": features, "decoder_input_ids": torch.tensor([[1, 5]])}
    with torch.no_grad():
        expected = model.model.encoder(features, output_attentions=True).attentions
    return headwise.capture(model, inputs, out=path, attention=attention), expected


def test_whisper_encoder_attention_is_captured_and_rebuilt_exactly(tmp_path):
    s, expected = whisper_session(tmp_path / "whisper.safetensors")
    assert s.model["type"] == "whisper" and s.layers == 2 and s.heads == 4
    assert s.tokens()[:3] == ["0.00s", "0.02s", "0.04s"], "encoder frames are 20 ms apart"
    # Whisper scales q inside its projection; the session's q is before the scale, as DESIGN
    # defines it, and the layer's scale is 1/sqrt(d).
    assert s.model["attention"][0]["scale"] == pytest.approx(8 ** -0.5)
    for layer in range(2):
        assert not s.has_attention(layer)
        assert_close(s.attention(layer), expected[layer][0], TOL, f"layer {layer}")


def tiny_vlm():
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration)

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=16, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=63, image_seq_length=4,
                         vision_feature_layer=-1, attn_implementation="eager")
    return LlavaForConditionalGeneration(config).eval()


def test_a_vision_language_models_language_tower_is_captured_with_its_image_tokens_marked(tmp_path):
    model = tiny_vlm()
    ids = torch.tensor([[1, 10, 63, 63, 63, 63, 11, 12]])
    pixels = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    s = headwise.capture(model, {"input_ids": ids, "pixel_values": pixels}, out=tmp_path / "vlm.safetensors",
                         attention="full")
    assert s.layers == 2 and s.model["kv_heads"] == 2, "the language tower, not the vision tower"
    assert s.inputs[0]["image_tokens"] == [2, 3, 4, 5]
    assert s.inputs[0]["kind"] == "text" and len(s.inputs[0]["next_tokens"]) == 5
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels, output_attentions=True).attentions
    for layer in range(2):
        assert_close(s.attention(layer), expected[layer][0], TOL, f"layer {layer}")


class HandWrittenAttention(torch.nn.Module):
    """A model whose attention does not go through a transformers modeling file: capture can
    only take its probabilities from `output_attentions`."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.config = type("Config", (), {"model_type": "hand-written", "_name_or_path": "hand"})()
        self.embed = torch.nn.Embedding(32, 8)
        self.qk = torch.nn.Linear(8, 16)

    def forward(self, input_ids, output_attentions=False):
        q, k = self.qk(self.embed(input_ids)).view(1, -1, 2, 8).transpose(1, 2).chunk(2, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return type("Output", (), {"attentions": (a, a.flip(-1).softmax(-1)) if output_attentions else None})()


def test_a_model_outside_transformers_modeling_files_gets_attention_only(tmp_path):
    model = HandWrittenAttention().eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    s = headwise.capture(model, ids, out=tmp_path / "hand.safetensors", attention="none")
    with torch.no_grad():
        expected = model(ids, output_attentions=True).attentions
    assert s.layers == 2 and s.heads == 2 and s.model["head_dim"] == 0
    assert "attention" not in s.model, "no logits to describe"
    assert not any(name.startswith(("q/", "k/", "lse/")) for name in s.keys())
    for layer in range(2):
        assert_close(s.attention(layer), expected[layer][0], 0.0, f"layer {layer}")
