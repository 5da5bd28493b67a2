"""The paper's optimisation recipes: what ``train_pretrain.py`` and ``train_ctc.py`` use unless told otherwise.

Pretraining recipes are per model preset (section 3.2 / 4.2 of the paper, fairseq's ``wav2vec2_base_librispeech``
and ``wav2vec2_large_librivox`` configs); fine-tuning recipes are per amount of labelled data (fairseq's
``examples/wav2vec/config/finetuning/base_{10m,1h,10h,100h,960h}.yaml``), plus one measured for the tiny preset on
the synthetic default corpus. Each field gives its fairseq name; any option given on a script's command line wins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..configuration import SAMPLING_RATE, W2V2Config


@dataclass(frozen=True)
class PretrainingRecipe:
    """Optimisation of self-supervised pretraining for one model preset."""

    learning_rate: float
    """Peak learning rate, reached at the end of the warm-up (fairseq ``optimization.lr``)."""
    max_tokens: int
    """Audio samples per device and micro-batch (fairseq ``dataset.max_tokens``)."""


@dataclass(frozen=True)
class FinetuningRecipe:
    """Everything the paper varies with the amount of labelled data, for CTC fine-tuning. fairseq's BASE recipes
    assume 8 batches of ``max_tokens`` per update (processes x gradient accumulation steps = 8)."""

    learning_rate: float
    """Peak learning rate of the tri-stage schedule (fairseq ``optimization.lr``)."""
    max_steps: int
    """Optimizer updates (fairseq ``optimization.max_update``)."""
    freeze_finetune_updates: int
    """Updates during which only the CTC head trains (fairseq ``model.freeze_finetune_updates``)."""
    mask_time_prob: float
    """Probability p of a time-mask span start (fairseq ``model.mask_prob``)."""
    mask_feature_prob: float
    """Probability of a channel-mask span start (fairseq ``model.mask_channel_prob``)."""
    layerdrop: float
    """Probability of skipping a Transformer block (fairseq ``model.layerdrop``)."""
    max_tokens: int
    """Audio samples per device and batch (fairseq ``dataset.max_tokens``)."""

    def fill_unset(self, *targets) -> dict:
        """Give every field of the recipe that is None on ``targets`` (on the first target with an attribute of that
        name, e.g. a script's arguments and its ``TrainingArguments``) the recipe's value. Returns ``{field: value
        the run uses}`` in field order."""
        chosen = {}
        for recipe_field in dataclasses.fields(self):
            name = recipe_field.name
            target = next(t for t in targets if hasattr(t, name))
            if getattr(target, name) is None:
                setattr(target, name, getattr(self, name))
            chosen[name] = getattr(target, name)
        return chosen


# The paper's optimisation per preset: peak LR and samples per device and update (fairseq max_tokens).
PRETRAINING_RECIPES = {
    "base": PretrainingRecipe(learning_rate=5e-4, max_tokens=1_400_000),
    "large_lv60": PretrainingRecipe(learning_rate=3e-4, max_tokens=1_200_000),
    # Tiny preset on the default corpus: 48 s per update and LR 1e-3, chosen by measurement against 16 s / 8 s and
    # 5e-4 / 2e-3 (docs/experiments.md, "Short pretraining runs").
    "tiny": PretrainingRecipe(learning_rate=1e-3, max_tokens=48 * SAMPLING_RATE),
}

FINETUNING_RECIPES = {
    "10m": FinetuningRecipe(learning_rate=5e-5, max_steps=13_000, freeze_finetune_updates=10_000,
                            mask_time_prob=0.65, mask_feature_prob=0.25, layerdrop=0.1, max_tokens=3_200_000),
    "1h": FinetuningRecipe(learning_rate=5e-5, max_steps=13_000, freeze_finetune_updates=10_000,
                           mask_time_prob=0.65, mask_feature_prob=0.25, layerdrop=0.1, max_tokens=3_200_000),
    "10h": FinetuningRecipe(learning_rate=5e-5, max_steps=20_000, freeze_finetune_updates=10_000,
                            mask_time_prob=0.65, mask_feature_prob=0.5, layerdrop=0.05, max_tokens=3_200_000),
    "100h": FinetuningRecipe(learning_rate=3e-5, max_steps=80_000, freeze_finetune_updates=0,
                             mask_time_prob=0.65, mask_feature_prob=0.5, layerdrop=0.1, max_tokens=3_200_000),
    "960h": FinetuningRecipe(learning_rate=1e-5, max_steps=320_000, freeze_finetune_updates=0,
                             mask_time_prob=0.5, mask_feature_prob=0.1, layerdrop=0.1, max_tokens=3_200_000),
    # Tiny preset on the synthetic default corpus: a lower LR than tiny models usually take (2e-3 and 3e-3 stayed
    # on the blank plateau), many small batches and light masking; measured (model_cards/, docs/experiments.md).
    "tiny": FinetuningRecipe(learning_rate=1e-3, max_steps=1500, freeze_finetune_updates=60,
                             mask_time_prob=0.3, mask_feature_prob=0.1, layerdrop=0.0, max_tokens=30 * SAMPLING_RATE),
}

# ``auto``: hours of labelled training audio up to which each of fairseq's recipes is taken (960h beyond).
_RECIPE_BY_HOURS = ((0.5, "10m"), (2, "1h"), (20, "10h"), (200, "100h"))


def choose_pretraining_recipe(config_name: str, config: W2V2Config | None = None) -> PretrainingRecipe:
    """The recipe of a preset name (``base``, ``large_lv60``, ``tiny``); for anything else, such as the path of a
    config.json, the recipe of the preset of the same width (``config.hidden_size``: narrower than BASE -> tiny,
    wider -> large_lv60), BASE's without a config."""
    if config_name in PRETRAINING_RECIPES:
        return PRETRAINING_RECIPES[config_name]
    if config is None or config.hidden_size == W2V2Config.base().hidden_size:
        return PRETRAINING_RECIPES["base"]
    return PRETRAINING_RECIPES["tiny" if config.hidden_size < W2V2Config.base().hidden_size else "large_lv60"]


def choose_finetuning_recipe(name: str, config: W2V2Config, train_hours: float) -> str:
    """The name of the fine-tuning recipe to use: ``name`` itself, or for ``auto`` ``tiny`` when the model is
    narrower than BASE (``config.hidden_size`` below BASE's 768), else the recipe sized for ``train_hours`` of
    labelled audio (up to 0.5 h: 10m, 2 h: 1h, 20 h: 10h, 200 h: 100h, more: 960h)."""
    if name != "auto":
        if name not in FINETUNING_RECIPES:
            raise ValueError(f"unknown recipe {name!r}; expected auto or one of {sorted(FINETUNING_RECIPES)}")
        return name
    if config.hidden_size < W2V2Config.base().hidden_size:
        return "tiny"
    for limit, recipe in _RECIPE_BY_HOURS:
        if train_hours <= limit:
            return recipe
    return "960h"
