"""The CNN feature encoder ``f: X -> Z`` (section 2), its frame arithmetic, and the projection to the model width.

:func:`num_frames` and :func:`receptive_field` are the one place where audio samples become frames: the model, the
collators and the config call them; the CTC loss, the Trainer, the pipeline and dataset transcription read the
frame counts the model returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration import W2V2Config


def num_frames(num_samples: int | torch.Tensor, conv_kernel: Sequence[int], conv_stride: Sequence[int]):
    """Frames produced by a stack of unpadded 1-D convolutions from ``num_samples`` samples (int or LongTensor).

    Each layer maps ``L -> floor((L - kernel) / stride) + 1``; a result below 1 means the audio is shorter than the
    receptive field (callers check ``W2V2Config.receptive_field``).
    """
    for kernel, stride in zip(conv_kernel, conv_stride):
        num_samples = (num_samples - kernel) // stride + 1
    return num_samples


def receptive_field(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Audio samples seen by one output frame: the shortest input for which :func:`num_frames` is 1."""
    field, jump = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field


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


class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> activation. ``norm``: None, ``"group"`` (per-channel over time) or ``"layer"``.

    Parameter names (``conv``, ``layer_norm``) follow the official checkpoints. Not a gradient-checkpointing layer:
    with gradients on, ``FeatureEncoder`` runs the fused ``_ActivateThenConv`` steps, which already keep only each
    layer's conv output (what checkpointing would keep) without computing the convolution twice.
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
        return self.activate(self.conv(x), valid)

    def activate(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """What follows the convolution: norm, then activation. (B, C, L') -> same."""
        if self.norm == "group":
            x = self._group_norm(x, valid)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.activation(x)

    def norm_parameters(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.layer_norm.parameters()) if self.norm else ()

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
        layers = self.conv_layers
        if not torch.is_grad_enabled():
            for i, layer in enumerate(layers):
                x = layer(x, first_valid if i == 0 else None)
            return x
        # Training: keep one tensor per layer (the conv output) instead of three (conv output, normalised,
        # activated); each fused step recomputes the previous layer's norm and activation in its backward.
        x = layers[0].conv(x)
        for i in range(1, len(layers)):
            prev, conv = layers[i - 1], layers[i].conv
            x = _ActivateThenConv.apply(x, first_valid if i == 1 else None, prev, conv, conv.weight, conv.bias,
                                        *prev.norm_parameters())
        return layers[-1].activate(x, first_valid if len(layers) == 1 else None)


class _ActivateThenConv(torch.autograd.Function):
    """``conv(prev.activate(x))`` that saves only ``x`` for the backward pass and recomputes the norm and activation
    there (elementwise work and one reduction, cheap beside the convolution).

    The plain graph keeps three tensors of the conv output's size per layer; at 16 kHz the first layers' outputs are
    the largest activations of the whole model (BASE, 2 x 8 s: 100 MiB each), so this keeps a third of the feature
    encoder's activations. Both passes run over slices of the batch of at most ``SLICE_ELEMENTS`` input elements
    (whole items: norms and convolutions act within an item), so their temporaries (normalised, activated, and
    their gradients) are a slice's, not the batch's. Gradients equal the plain graph's up to summation order.

    Inputs: x (B, C, L), valid (first-layer frame mask or None), prev (the ConvLayer whose norm + activation come
    first), conv (the next nn.Conv1d), its weight and bias, then prev's norm parameters (so that their gradients
    flow through the autograd graph like any parameter's, DDP hooks included).
    """

    SLICE_ELEMENTS = 1 << 22  # 16 MiB of fp32

    @staticmethod
    def _slices(x):
        per_item = max(1, x[0].numel())
        step = max(1, _ActivateThenConv.SLICE_ELEMENTS // per_item)
        return [slice(i, i + step) for i in range(0, x.shape[0], step)]

    @staticmethod
    def forward(ctx, x, valid, prev, conv, weight, bias, *norm_params):
        device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.prev, ctx.conv = prev, conv
        ctx.save_for_backward(x, valid, weight)
        ctx.norm_params = norm_params  # parameters: kept alive by the module anyway
        slices = _ActivateThenConv._slices(x)
        with torch.no_grad():
            if len(slices) == 1:
                return conv(prev.activate(x, valid))
            out = None
            for s in slices:
                y = conv(prev.activate(x[s], None if valid is None else valid[s]))
                if out is None:
                    out = y.new_empty((x.shape[0], *y.shape[1:]))
                out[s] = y
            return out

    @staticmethod
    def backward(ctx, grad_y):
        x, valid, weight = ctx.saved_tensors
        conv, needs = ctx.conv, ctx.needs_input_grad
        enabled, dtype = ctx.autocast
        need_x, need_w, need_b, need_norm = needs[0], needs[4], conv.bias is not None and needs[5], needs[6:]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = grad_b = None
        grad_norm = [None] * len(need_norm)
        grad_y = grad_y.contiguous()
        for s in _ActivateThenConv._slices(x):
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                x_in = x[s].detach().requires_grad_(need_x)
                h = ctx.prev.activate(x_in, None if valid is None else valid[s])
            wanted = [t for t, need in zip((x_in, *ctx.norm_params), (need_x, *need_norm)) if need]
            # The forward convolution ran on h and the weight cast to the output's dtype (autocast) or as they were.
            grad_h, gw, gb = torch.ops.aten.convolution_backward(
                grad_y[s], h.detach().to(grad_y.dtype), weight.to(grad_y.dtype),
                [weight.shape[0]] if conv.bias is not None else None, conv.stride, conv.padding, conv.dilation,
                False, [0], conv.groups, [bool(wanted), need_w, need_b],
            )
            if gw is not None:  # summed in the parameter's dtype (fp32 under autocast)
                grad_w = gw.to(weight.dtype) if grad_w is None else grad_w.add_(gw)
            if gb is not None:
                grad_b = gb.to(conv.bias.dtype) if grad_b is None else grad_b.add_(gb)
            grads = iter(torch.autograd.grad(h, wanted, grad_h.to(h.dtype)) if wanted else ())
            del h, grad_h
            if need_x:
                grad_x[s] = next(grads)
            for i, need in enumerate(need_norm):
                if need:
                    g = next(grads)
                    grad_norm[i] = g if grad_norm[i] is None else grad_norm[i].add_(g)
        return (grad_x, None, None, None, grad_w, grad_b, *grad_norm)


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
