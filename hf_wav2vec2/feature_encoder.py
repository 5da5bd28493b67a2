"""The CNN feature encoder ``f: X -> Z`` (section 2) and the projection to the model width. Its frame arithmetic is
in :mod:`.frames`."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration import W2V2Config
from .frames import frame_mask, num_frames
from .kernels_conv import conv1d_channels_last
from .kernels_dropout import Dropout
from .kernels_norm import conv_group_norm, group_norm_channels_last
from .kernels_recompute import activate_then_conv, grad_multiply


class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> activation, as ``activate(conv(x))``, on channels-last (B, L, C) tensors. ``norm``:
    None, ``"group"`` (per-channel over time) or ``"layer"``.

    Parameter names (``conv``, ``layer_norm``) follow the official checkpoints. ``FeatureEncoder`` calls ``conv`` and
    ``activate`` separately (the module has no ``forward``), so that ``activate_then_conv`` can fuse one layer's
    activation with the next layer's convolution (what gradient checkpointing would keep, without computing the
    convolution twice).
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

    def activate(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """What follows the convolution: norm, then activation. (B, L', C) -> same. ``valid``: (B, L') bool frames
        computed from real samples only; the group norm takes its statistics over them, so that padding does not
        change them."""
        if self.norm == "group":
            x = self._group_norm(x, valid)
        elif self.norm == "layer":
            x = self.layer_norm(x)
        return self.activation(x)

    def conv_then_activate(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The whole layer, ``activate(conv(x), valid)``: (B, L, C_in) -> (B, L', C_out). A group norm takes its
        statistics from the convolution's inputs (``conv_group_norm``)."""
        if self.norm == "group":
            return self.activation(conv_group_norm(x, self.conv, self.layer_norm, valid))
        return self.activate(conv1d_channels_last(x, self.conv), valid)

    def norm_parameters(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.layer_norm.parameters()) if self.norm else ()

    def _group_norm(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        # Statistics in fp32 at least (fairseq's Fp32GroupNorm; autocast would do the same), fp64 stays fp64. With
        # ``valid``, over the real frames only: a padded item gets the same output as alone. transformers includes
        # the padding (and so changes outputs with padding); for an unpadded batch both agree.
        norm = self.layer_norm
        return group_norm_channels_last(x, norm.weight, norm.bias, norm.eps, valid)


class FeatureEncoder(nn.Module):
    """Raw audio (B, L) -> conv features (B, T, C), with the gradient into it scaled by ``feature_grad_mult``.

    Channels-last throughout: every convolution is :func:`conv1d_channels_last` (matrix products on CPU), the
    norms and activations act on (B, L', C), and the output is already time-major for the projection.
    """

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
                                    config.feat_extract_activation, config.layer_norm_eps))
        self.conv_layers = nn.ModuleList(layers)
        self.conv_kernel, self.conv_stride = tuple(config.conv_kernel), tuple(config.conv_stride)
        self.grad_mult = config.feature_grad_mult
        self.uses_group_norm = config.feat_extract_norm == "group"

    def forward(self, input_values: torch.Tensor, sample_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_values: (B, L) float; sample_lengths: (B,) real samples per item or None (no padding) -> (B, T, C).

        Layer i is ``activate_i(conv_i(x))``; the loop groups it as ``activate_{i-1}`` fused with ``conv_i``
        (``activate_then_conv`` keeps one tensor per layer for the backward pass), then the last ``activate``.
        With gradients the whole first layer joins the first group (``conv_1(activate_0(conv_0(audio)))`` keeps only
        the audio; the first layer is recomputed in the backward pass, over slices of the batch). Only the first
        layer's norm (group norm) reads the real-frame mask.
        """
        layers = self.conv_layers
        x = input_values[:, :, None]  # (B, L, 1)
        first_valid = None
        if sample_lengths is not None and self.uses_group_norm:
            first_len = num_frames(sample_lengths, self.conv_kernel[:1], self.conv_stride[:1])
            first_valid = frame_mask(first_len, num_frames(x.shape[1], self.conv_kernel[:1], self.conv_stride[:1]))
        # feature_grad_mult 0 freezes the encoder (the paper's fine-tuning): no graph at all.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.grad_mult > 0):
            if len(layers) > 1 and torch.is_grad_enabled():
                # The first layer is recomputed from the audio in the backward pass: its output (512 channels at a
                # fifth of the sample rate) would be the largest tensor kept, the audio is a 512th of it.
                first = layers[0]
                frames = num_frames(x.shape[1], self.conv_kernel[:1], self.conv_stride[:1])
                x = activate_then_conv(x, first.conv_then_activate, layers[1].conv, first_valid,
                                       (*first.conv.parameters(), *first.norm_parameters()),
                                       item_elements=first.conv.out_channels * frames)
            elif len(layers) > 1:  # without gradients nothing is recomputed: the plain stack
                x = conv1d_channels_last(layers[0].conv_then_activate(x, first_valid), layers[1].conv)
            else:
                x = conv1d_channels_last(x, layers[0].conv)
            for i in range(2, len(layers)):
                prev = layers[i - 1]
                x = activate_then_conv(x, prev.activate, layers[i].conv, None, prev.norm_parameters())
            x = layers[-1].activate(x, first_valid if len(layers) == 1 else None)  # (B, T, C)
        return grad_multiply(x, self.grad_mult)


class FeatureProjection(nn.Module):
    """LayerNorm over conv channels, then the linear map to the model width, then dropout (fairseq dropout_input).

    Returns (projected (B, T, H), normalised features (B, T, C)); the latter feed the quantizer.
    """

    def __init__(self, in_dim: int, hidden_size: int, eps: float, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=eps)
        self.projection = nn.Linear(in_dim, hidden_size)
        self.dropout = Dropout(dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed
