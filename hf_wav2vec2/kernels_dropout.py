"""Dropout whose CPU mask costs a tenth of torch's: four 16-bit uniforms from each 64-bit random draw, compared
into bytes.

The drop probability is rounded to a multiple of 2^-16 (0.100006 for 0.1) and the scale is 1 / (1 - p') for that
p', so the expectation is exact. GPUs keep ``bernoulli_``. Measurements: docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# keep_mask draws 16-bit uniforms: a drop probability p becomes round(p * 2^16) / 2^16.
_MASK_BITS = 16


def keep_mask(shape: Sequence[int], p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A bool dropout mask of ``shape`` (True: keep) from the global RNG, and the scale ``1 / (1 - p')`` for it.

    On CPU, ``bernoulli_`` draws one random number per element. Here each 64-bit draw of ``randint`` gives four
    16-bit uniforms u, and an element is kept where u >= round(p * 2^16) (and ``torch.compile`` traces it). The drop
    probability is then p' = round(p * 2^16) / 2^16 (0.100006 for 0.1, |p' - p| <= 2^-17), and the scale
    ``1 / (1 - p')`` keeps the expectation exact. Elsewhere (GPU) it is ``bernoulli_(1 - p)`` and p' = p.
    """
    device = torch.device(device)
    threshold = round(p * (1 << _MASK_BITS))
    if p >= 1.0 or (device.type == "cpu" and threshold >= 1 << _MASK_BITS):
        return torch.zeros(shape, dtype=torch.bool, device=device), 0.0
    if device.type != "cpu":
        return torch.empty(shape, dtype=torch.bool, device=device).bernoulli_(1.0 - p), 1.0 / (1.0 - p)
    n = 1
    for size in shape:
        n *= size
    # 64 random bits per word (all but one of the 2^64 values), four 16-bit uniforms over the int16 range
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64)
    # compared into uint8, viewed as bool: a bool result is not vectorised on CPU
    keep = torch.empty(n, dtype=torch.uint8)
    torch.ge(words.view(torch.int16)[:n], threshold - (1 << (_MASK_BITS - 1)), out=keep)
    return keep.view(torch.bool).view(shape), (1 << _MASK_BITS) / ((1 << _MASK_BITS) - threshold)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask of :func:`keep_mask` on CPU (saved as bytes for the backward pass,
    as torch's; traced as it is by ``torch.compile``, so compiled and eager steps draw the same masks). On GPU it is
    ``F.dropout`` itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep, scale = keep_mask(x.shape, p)
    keep = keep.view(torch.uint8)  # products with a bool tensor are 2x slower on CPU (BASE's hidden states, bf16)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.mul(x, keep).mul_(scale)
    return _MaskScale.apply(x, keep, scale)




class _MaskScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.scale = scale
        ctx.save_for_backward(keep)
        return torch.mul(x, keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, keep).mul_(ctx.scale), None, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
