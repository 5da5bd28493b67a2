"""Shared tiny configurations: hidden 32, three conv layers, two blocks. Each model builds in milliseconds."""

import pytest
import torch
from transformers import Wav2Vec2Config

from hf_wav2vec2 import W2V2Config

TINY = dict(
    conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), hidden_size=32, num_hidden_layers=2,
    num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16,
    num_negatives=10, vocab_size=12, mask_time_prob=0.65, mask_time_length=4, mask_time_min_masks=2,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
    feat_quantizer_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
)
# BASE-like (group norm, post-LN) and LV-60-like (layer norm with conv bias, pre-LN).
VARIANTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def tiny_config(variant: str = "group_postln", **overrides) -> W2V2Config:
    return W2V2Config(**{**TINY, **VARIANTS[variant], **overrides})


def tiny_hf_config(variant: str = "group_postln", **overrides) -> Wav2Vec2Config:
    return Wav2Vec2Config(**{**TINY, **VARIANTS[variant], **overrides})


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
