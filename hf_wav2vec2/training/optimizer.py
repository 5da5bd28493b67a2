"""Optimizer parameter groups for pretraining: which parameters get weight decay."""

from __future__ import annotations

from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[{decayed parameters, weight_decay}, {the rest, weight_decay 0}]`` for ``torch.optim.AdamW``.

    Decoupled weight decay shrinks weight matrices and convolution kernels only. Left undecayed: biases and every
    other parameter of fewer than 2 dimensions (norm gains and shifts, ``masked_spec_embed``), every parameter whose
    name contains "norm", and the quantizer's ``codevectors`` (a codebook, which like an embedding table is not
    decayed).
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        undecayed = parameter.ndim < 2 or "norm" in name or "codevectors" in name
        (no_decay if undecayed else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
