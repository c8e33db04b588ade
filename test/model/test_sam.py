"""SAM's image encoder with SDPA attention computes what segment_anything's eager attention computes."""
from __future__ import annotations

import copy

import pytest
import torch

from lisa_ros.model.sam import SamConfig, build_sam, sam_modeling, use_sdpa_attention

SMALL = SamConfig(encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4, encoder_global_attn_indexes=(1, 3),
                  window_size=4, image_size=128, patch_size=16, prompt_embed_dim=32, decoder_mlp_dim=64,
                  decoder_num_heads=2, iou_head_hidden_dim=32)


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    eager = build_sam(SMALL, sdpa=False).image_encoder.eval()
    for block in eager.blocks:  # zero-initialised otherwise: make the relative positions matter
        torch.nn.init.normal_(block.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(block.attn.rel_pos_w, std=0.5)
    sdpa = copy.deepcopy(eager)
    use_sdpa_attention(sdpa)
    return eager, sdpa


def test_built_sam_uses_sdpa_and_keeps_the_checkpoint_parameter_names():
    eager, sdpa = build_sam(SMALL, sdpa=False), build_sam(SMALL)
    attention = sam_modeling().image_encoder.Attention
    assert all(type(b.attn) is attention for b in eager.image_encoder.blocks)
    assert all(type(b.attn) is not attention and isinstance(b.attn, attention) for b in sdpa.image_encoder.blocks)
    assert [k for k, _ in eager.state_dict().items()] == [k for k, _ in sdpa.state_dict().items()]


@pytest.mark.parametrize("block", [0, 1], ids=["windowed", "global"])
def test_sdpa_block_equals_eager_block(encoders, block):
    eager, sdpa = encoders
    tokens = torch.randn(2, 8, 8, SMALL.encoder_embed_dim)
    with torch.inference_mode():
        expected, actual = eager.blocks[block](tokens), sdpa.blocks[block](tokens)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_sdpa_encoder_equals_eager_encoder(encoders):
    eager, sdpa = encoders
    pixels = torch.randn(1, 3, SMALL.image_size, SMALL.image_size)
    with torch.inference_mode():
        torch.testing.assert_close(sdpa(pixels), eager(pixels), atol=1e-5, rtol=1e-5)
