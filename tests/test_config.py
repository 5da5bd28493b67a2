"""Config hygiene: every field is documented with the presets' values, and every field is read somewhere (flipping it
changes the model, its outputs, its gradients or a schedule), or is documented as metadata."""

import ast
import re

import pytest
import torch
from conftest import tiny_config

from hf_wav2vec2 import W2V2Config, W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.training import gumbel_temperature
from hf_wav2vec2.training.finetune import FreezeFinetuneCallback

FIELDS = [name for name in W2V2Config.__annotations__ if not name.startswith("_") and name != "model_type"]
METADATA = {"bos_token_id", "eos_token_id"}
# The tiny test config (tests/conftest.py) with channel masking on, so that its length and count can matter.
PROBE = dict(mask_feature_prob=0.2)
# field -> a value that differs from the probe config's and still validates.
FLIPS = {
    "conv_dim": (32, 32, 24), "conv_kernel": (10, 3, 2), "conv_stride": (5, 2, 3), "conv_bias": True,
    "feat_extract_norm": "layer", "feat_extract_activation": "relu", "feature_grad_mult": 0.5,
    "feat_proj_dropout": 0.3, "apply_spec_augment": False, "mask_time_prob": 0.3, "mask_time_length": 2,
    "mask_time_min_masks": 40, "require_same_masks": False, "mask_feature_prob": 0.5, "mask_feature_length": 3,
    "mask_feature_min_masks": 3, "mask_embedding_init": "zeros", "hidden_size": 48, "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 48, "hidden_act": "relu", "do_stable_layer_norm": True, "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 4, "hidden_dropout": 0.3, "attention_dropout": 0.3,
    "activation_dropout": 0.3, "layerdrop": 1.0, "layer_norm_eps": 0.5, "initializer_range": 0.5,
    "num_codevector_groups": 4, "num_codevectors_per_group": 5, "codevector_dim": 24, "feat_quantizer_dropout": 0.3,
    "gumbel_temperature_start": 1.0, "gumbel_temperature_end": 0.7, "gumbel_temperature_decay": 0.99,
    "proj_codevector_dim": 24, "num_negatives": 4, "contrastive_logits_temperature": 0.5,
    "diversity_loss_weight": 0.5, "feature_penalty_weight": 1.0, "vocab_size": 13, "final_dropout": 0.3,
    "ctc_loss_reduction": "mean", "ctc_zero_infinity": False, "freeze_finetune_updates": 7, "pad_token_id": 3,
}


def _documented_values() -> dict[str, tuple[str, str]]:
    """field -> (BASE, LARGE) value strings, from the ``- ``field``: ... BASE ``v``, LARGE ``v``.`` entries."""
    doc = W2V2Config.__doc__
    entries = re.split(r"\n    - ", doc)[1:]
    values = {}
    for entry in entries:
        names = re.match(r"((?:``\w+``(?:, )?)+):", entry)
        found = re.search(r"BASE ``(.+?)``,\s+LARGE ``(.+?)``", entry)
        assert names and found, f"entry without BASE / LARGE values: {entry[:80]!r}"
        for name in re.findall(r"``(\w+)``", names.group(1)):
            values[name] = found.groups()
    return values


def test_every_field_is_documented_with_the_presets_values():
    documented = _documented_values()
    assert sorted(documented) == sorted(FIELDS)
    base, large = W2V2Config.base(), W2V2Config.large_lv60()
    for name, (base_value, large_value) in documented.items():
        assert ast.literal_eval(base_value) == getattr(base, name), name
        assert ast.literal_eval(large_value) == getattr(large, name), name


def _fingerprint(config: W2V2Config) -> dict[str, torch.Tensor | float | tuple]:
    """What a field can change: parameter shapes and initial values, pretraining and CTC outputs in training and
    eval, the conv encoder's gradient, the Gumbel schedule, the fine-tuning freeze."""
    x = torch.randn(2, 2400, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 2400, dtype=torch.long)
    mask[1, 1500:] = 0
    labels = torch.tensor([[1, 2, 2, 3, 4, 5, 6, 7], [4, 5, 3, 7, -100, -100, -100, -100]])
    infeasible = torch.full((1, 100), 5)  # more labels than frames: only zero_infinity keeps it finite
    out: dict = {}
    torch.manual_seed(0)
    pretraining = W2V2ForPreTraining(config)
    out["params"] = tuple((n, tuple(p.shape)) for n, p in pretraining.state_dict().items())
    out["init"] = torch.cat([p.detach().flatten()[:50] for p in pretraining.parameters()])
    torch.manual_seed(0)
    train = pretraining.train()(x, attention_mask=mask, generator=torch.Generator().manual_seed(0))
    train.loss.backward()
    out["conv_grad"] = pretraining.wav2vec2.feature_extractor.conv_layers[0].conv.weight.grad
    out["pretrain_train"] = torch.cat([train.loss[None], train.logits.flatten(), train.mask_time_indices.flatten()])
    with torch.no_grad():
        evaluated = pretraining.eval()(x, attention_mask=mask, generator=torch.Generator().manual_seed(0))
    out["pretrain_eval"] = torch.cat([evaluated.loss[None], evaluated.logits.flatten()])
    torch.manual_seed(0)
    ctc = W2V2ForCTC(config)
    torch.manual_seed(0)
    ctc_train = ctc.train()(x, attention_mask=mask, labels=labels, generator=torch.Generator().manual_seed(0))
    out["ctc_train"] = torch.cat([ctc_train.loss[None], ctc_train.logits.flatten()])
    with torch.no_grad():
        out["ctc_infeasible"] = ctc.eval()(x[:1], labels=infeasible).loss
    out["gumbel"] = tuple(gumbel_temperature(step, config) for step in (0, 10, 1000, 10**6))
    out["freeze"] = FreezeFinetuneCallback()._updates(ctc)
    return out


def _differs(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape != b.shape or not torch.allclose(a, b, equal_nan=True)
    return a != b


def test_flipping_any_field_changes_something():
    assert sorted(FLIPS) == sorted(set(FIELDS) - METADATA), "give every new config field a value in FLIPS"
    reference = _fingerprint(tiny_config(**PROBE))
    unchanged = []
    for name, value in FLIPS.items():
        assert getattr(tiny_config(**PROBE), name) != value, name
        flipped = _fingerprint(tiny_config(**{**PROBE, name: value}))
        if not any(_differs(reference[key], flipped[key]) for key in reference):
            unchanged.append(name)
    assert not unchanged, f"flipping these fields changes nothing: {unchanged}"


@pytest.mark.parametrize("name", sorted(METADATA))
def test_metadata_fields_default_to_none(name):
    assert getattr(W2V2Config(), name) is None
