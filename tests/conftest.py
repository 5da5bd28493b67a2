"""Shared test material: tiny configurations (hidden 32, three conv layers, two blocks; each model builds in
milliseconds), the real recordings of shared/real_speech, small ARPA language models, and a free port for the
multi-process launches."""

import socket
from pathlib import Path

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


# ------------------------------------------------------------------------------------------ real recordings
# shared/ lies beside the checkout here; a clone elsewhere (CI) finds it at the workplace's fixed path, or skips.
REAL_SPEECH = Path(__file__).resolve().parents[2] / "shared" / "real_speech"
if not REAL_SPEECH.is_dir():
    REAL_SPEECH = Path("/work/shared/real_speech")
needs_real_speech = pytest.mark.skipif(not REAL_SPEECH.is_dir(), reason="shared/real_speech is not available")


# ----------------------------------------------------------------------------------------- language models
# A word bigram LM: after THE, CAT is 10^2.9 times likelier than CAB; both are in the vocabulary.
WORD_BIGRAM_ARPA = """
\\data\\
ngram 1=7
ngram 2=8

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-1.0\t</s>\t0
-1.0\tTHE\t-0.5
-1.5\tCAT\t-0.5
-1.5\tCAB\t-0.5
-1.5\tSAT\t-0.5

\\2-grams:
-0.1\t<s> THE
-0.1\tTHE CAT
-3.0\tTHE CAB
-0.1\tCAT SAT
-3.0\tCAB SAT
-0.1\tSAT </s>
-1.0\tCAT </s>
-1.0\tCAB </s>

\\end\\
"""

# A character bigram LM over the tokens (| separates words): T follows A, B hardly ever does.
CHAR_BIGRAM_ARPA = """
\\data\\
ngram 1=11
ngram 2=11

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>\t0
-1.0\tT\t-0.3
-1.0\tH\t-0.3
-1.0\tE\t-0.3
-1.0\t|\t-0.3
-1.0\tC\t-0.3
-1.0\tA\t-0.3
-1.0\tS\t-0.3
-2.0\tB\t-0.3

\\2-grams:
-0.1\t<s> T
-0.1\tT H
-0.1\tH E
-0.1\tE |
-0.3\t| C
-0.3\t| S
-0.1\tC A
-0.1\tS A
-0.1\tA T
-3.0\tA B
-0.3\tT |

\\end\\
"""


def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's / accelerate's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
