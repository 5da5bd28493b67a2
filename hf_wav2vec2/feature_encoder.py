"""The CNN feature encoder ``f: X -> Z`` (section 2), its frame arithmetic, and the projection to the model width.

:func:`num_frames` is the one place where audio samples become frames: the model, the collators, the CTC input
lengths and the pipeline all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration import W2V2Config


def num_frames(num_samples: int | torch.Tensor, conv_kernel: Sequence[int], conv_stride: Sequence[int]):
    """Frames produced by a stack of unpadded 1-D convolutions from ``num_samples`` samples (int or LongTensor).

    Each layer maps ``L -> floor((L - kernel) / stride) + 1``; a result below 1 means the audio is shorter than the
    receptive field (callers check ``W2V2Config.receptive_field``).
    """
    for kernel, stride in zip(conv_kernel, conv_stride):
        num_samples = (num_samples - kernel) // stride + 1
    return num_samples


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by ``scale`` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class ConvLayer(GradientCheckpointingLayer):
    """Conv1d -> optional norm -> activation. ``norm``: None, ``"group"`` (per-channel over time) or ``"layer"``.

    Parameter names (``conv``, ``layer_norm``) follow the official checkpoints.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str | None,
                 activation: str, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=kernel, stride=stride, bias=bias)
        self.norm = norm
        if norm == "group":
            # num_groups == channels: each channel normalised over time, as fairseq's Fp32GroupNorm(dim, dim).
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, eps=eps, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, eps=eps)
        self.activation = ACT2FN[activation]

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C_in, L) -> (B, C_out, L'). ``valid``: (B, L') bool frames computed from real samples only; used by
        the group norm so that padding does not change its statistics."""
        x = self.conv(x)  # (B, C, L')
        if self.norm == "group":
            x = self._group_norm(x, valid)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.activation(x)

    def _group_norm(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        norm = self.layer_norm
        if valid is None:
            # fp32 statistics as fairseq's Fp32GroupNorm; autocast would do the same.
            return nn.functional.group_norm(x.float(), norm.num_groups, norm.weight, norm.bias, norm.eps).type_as(x)
        # Statistics over the real frames only: a padded item gets the same output as alone. transformers includes
        # the padding (and so changes outputs with padding); for an unpadded batch both agree.
        m = valid[:, None, :].float()  # (B, 1, L')
        count = m.sum(-1, keepdim=True).clamp_min(1.0)
        xf = x.float()
        mean = (xf * m).sum(-1, keepdim=True) / count
        var = ((xf - mean).square() * m).sum(-1, keepdim=True) / count
        y = (xf - mean) * torch.rsqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
        return y.type_as(x)


class FeatureEncoder(nn.Module):
    """Raw audio (B, L) -> conv features (B, C, T), with the gradient into it scaled by ``feature_grad_mult``."""

    def __init__(self, config: W2V2Config):
        super().__init__()
        dims = (1, *config.conv_dim)
        layers = []
        for i, (kernel, stride) in enumerate(zip(config.conv_kernel, config.conv_stride)):
            if config.feat_extract_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(dims[i], dims[i + 1], kernel, stride, config.conv_bias, norm,
                                    config.feat_extract_activation))
        self.conv_layers = nn.ModuleList(layers)
        self.conv_kernel, self.conv_stride = tuple(config.conv_kernel), tuple(config.conv_stride)
        self.grad_mult = config.feature_grad_mult
        self.uses_group_norm = config.feat_extract_norm == "group"

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_values: (B, L) float; lengths: (B,) real samples per item or None (no padding) -> (B, C, T)."""
        x = input_values[:, None, :]  # (B, 1, L)
        first_valid = None
        if lengths is not None and self.uses_group_norm:
            first_len = num_frames(lengths, self.conv_kernel[:1], self.conv_stride[:1])
            first_valid = frame_mask(first_len, num_frames(x.shape[-1], self.conv_kernel[:1], self.conv_stride[:1]))
        if self.grad_mult == 0.0:
            with torch.no_grad():  # the paper's "0 freezes": no graph at all
                return self._run(x, first_valid)
        x = self._run(x, first_valid)
        if self.grad_mult != 1.0 and x.requires_grad:
            x = _GradMultiply.apply(x, self.grad_mult)
        return x

    def _run(self, x, first_valid):
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, first_valid if i == 0 else None)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm over conv channels, then the linear map to the model width, then dropout (fairseq dropout_input).

    Returns (projected (B, T, H), normalised features (B, T, C)); the latter feed the quantizer.
    """

    def __init__(self, in_dim: int, hidden_size: int, eps: float, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=eps)
        self.projection = nn.Linear(in_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed
