"""The pretraining optimizer: AdamW, fused where torch has the kernel, and which parameters get weight decay."""

from __future__ import annotations

import torch
from torch import nn

# Devices with torch's fused AdamW kernel (one pass over all parameters instead of a dozen per tensor; 3x faster
# than the per-tensor loop on 2 CPU cores, docs/performance.md). The Trainer's
# default optimizer (``adamw_torch_fused``) is the same kernel, so fine-tuning already uses it.
FUSED_DEVICES = ("cpu", "cuda")


def adamw(model: nn.Module, lr: float, betas: tuple[float, float], eps: float, weight_decay: float
          ) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`parameter_groups`, fused when every parameter is on a device in
    ``FUSED_DEVICES`` (same update; under fp16 the GradScaler hands the fused kernel its inf check, which skips
    the whole update as the per-tensor loop would)."""
    fused = True if all(p.device.type in FUSED_DEVICES for p in model.parameters()) else None  # None: torch's default
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


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
