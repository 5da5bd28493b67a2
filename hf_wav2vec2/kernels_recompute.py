"""Memory-saving autograd kernels: each computes exactly its plain PyTorch expression, but keeps fewer tensors for
the backward pass and recomputes the cheap rest there.

- :func:`grad_multiply`: identity forward, scaled gradient (fairseq ``GradMultiply``, ``feature_grad_mult``).
- :func:`activate_then_conv`: ``conv(activate(x))`` keeping only ``x`` (the feature encoder: one tensor per layer).
- :func:`activate_then_linear`: ``linear(act(x))`` keeping only ``x`` (the feed-forward's inner activation).

With gradients off they are their plain expressions. Under ``torch.compile`` ``grad_multiply`` traces as an autograd
Function; the other two, whose backward passes call ``torch.autograd.grad``, become their plain expressions, and
the compiler's partitioner chooses what to keep. Gradient tests: ``tests/test_ops.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .kernels_conv import _conv_backward, _conv_forward, conv1d_channels_last
from .kernels_dropout import dropout as _dropout

# activate_then_conv works over batch slices of at most this many input elements (16 MiB of fp32).
SLICE_ELEMENTS = 1 << 22


def grad_multiply(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` forward; the gradient flowing back through it is multiplied by ``scale`` (fairseq's GradMultiply, used
    with ``feature_grad_mult`` = 0.1 on the conv encoder of BASE). Returns ``x`` itself when there is nothing to
    scale (``scale`` 1, or no gradient)."""
    if scale == 1.0 or not x.requires_grad:
        return x
    return _GradMultiply.apply(x, scale)


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def activate_then_conv(
    x: torch.Tensor,
    activate: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    conv: nn.Conv1d,
    valid: torch.Tensor | None = None,
    activate_params: Sequence[torch.Tensor] = (),
    item_elements: int | None = None,
) -> torch.Tensor:
    """``conv1d_channels_last(activate(x, valid), conv)`` that saves only ``x`` for the backward pass.

    x: (B, L, C) channels-last, the previous conv layer's output; activate: that layer's norm + activation,
    ``(x, valid) -> same shape``, acting within each item; valid: (B, L) bool real frames for the norm, or None;
    activate_params: the parameters ``activate`` uses (its norm's weight and bias), so that their gradients flow like
    any parameter's; item_elements: elements per item of ``activate``'s output when it is larger than ``x``
    (``activate`` may itself hold a convolution, as the feature encoder's first layer does), for sizing the batch
    slices; default ``x``'s. Returns (B, L', C_out).

    Saves: the plain graph keeps three tensors of the conv output's size per layer (conv output, normalised,
    activated); at 16 kHz the first layers' outputs are the largest activations of the model (BASE, 2 x 8 s: 100 MiB
    each), so this keeps a third of the feature encoder's activations. Both passes run over slices of the batch
    (whole items, at most ``SLICE_ELEMENTS`` input elements), so their temporaries are a slice's, not the batch's.
    Exact: the backward recomputes ``activate`` (elementwise work and one reduction) under the forward's autocast
    state; gradients equal the plain graph's up to summation order. Without gradients, and under ``torch.compile``
    (see the module docstring), it is the plain expression.
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return conv1d_channels_last(activate(x, valid), conv)
    return _ActivateThenConv.apply(x, valid, activate, conv, item_elements, conv.weight, conv.bias, *activate_params)


def _batch_slices(x: torch.Tensor, item_elements: int | None = None) -> list[slice]:
    step = max(1, SLICE_ELEMENTS // max(1, item_elements or x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


class _ActivateThenConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, valid, activate, conv, item_elements, weight, bias, *activate_params):
        device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.activate, ctx.conv, ctx.item_elements = activate, conv, item_elements
        ctx.save_for_backward(x, valid, weight)
        ctx.activate_params = activate_params  # parameters: kept alive by their module anyway
        slices = _batch_slices(x, item_elements)
        stride = conv.stride[0]
        if len(slices) == 1:
            return _conv_forward(activate(x, valid), weight, bias, stride)
        out = None
        for s in slices:
            y = _conv_forward(activate(x[s], None if valid is None else valid[s]), weight, bias, stride)  # (b, L', C)
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out[s] = y
        return out

    @staticmethod
    def backward(ctx, grad_y):
        x, valid, weight = ctx.saved_tensors
        conv, needs = ctx.conv, ctx.needs_input_grad
        enabled, dtype = ctx.autocast
        need_x, need_w, need_b, need_params = needs[0], needs[5], conv.bias is not None and needs[6], needs[7:]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = grad_b = None
        grad_params = [None] * len(need_params)
        for s in _batch_slices(x, ctx.item_elements):
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                x_in = x[s].detach().requires_grad_(need_x)
                h = ctx.activate(x_in, None if valid is None else valid[s])
            wanted = [t for t, need in zip((x_in, *ctx.activate_params), (need_x, *need_params)) if need]
            # grad_y is in the forward output's dtype, which is the dtype the convolution computed in.
            grad_h, gw, gb = _conv_backward(grad_y[s], h.detach(), weight, conv.bias is not None, conv.stride[0],
                                            (bool(wanted), need_w, need_b))
            if gw is not None:  # summed in fp32 at least
                grad_w = gw if grad_w is None else grad_w.add_(gw)
            if gb is not None:
                grad_b = gb if grad_b is None else grad_b.add_(gb)
            grads = iter(torch.autograd.grad(h, wanted, grad_h.to(h.dtype)) if wanted else ())
            del h, grad_h
            if need_x:
                grad_x[s] = next(grads)
            for i, need in enumerate(need_params):
                if need:
                    g = next(grads)
                    grad_params[i] = g if grad_params[i] is None else grad_params[i].add_(g)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(conv.bias.dtype)
        return (grad_x, None, None, None, None, grad_w, grad_b, *grad_params)


def activate_then_linear(x: torch.Tensor, activation: Callable[[torch.Tensor], torch.Tensor], linear: nn.Linear,
                         dropout: float = 0.0) -> torch.Tensor:
    """``linear(dropout(activation(x)))``, the feed-forward's second half. x: (..., intermediate_size).

    Saves: with gradients and no dropout, keeps only ``x`` (not also ``activation(x)``) and recomputes the
    elementwise activation in the backward pass: one (B, T, intermediate_size) tensor per layer instead of two
    (BASE, 2 x 8 s: 9 MiB less per layer). Exact: the same ops under the forward's autocast state. With dropout
    (``dropout`` > 0, training), without gradients and under ``torch.compile`` (see the module docstring) it is the
    plain expression.
    """
    if dropout > 0.0 or not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return linear(_dropout(activation(x), dropout, training=dropout > 0.0))
    return _ActivateThenLinear.apply(x, activation, linear.weight, linear.bias)


class _ActivateThenLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, activation, weight, bias):
        device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.activation = activation
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        with torch.no_grad():
            return F.linear(activation(x), weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad
        enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
            x_in = x.detach().requires_grad_(need_x)
            h = ctx.activation(x_in)
        # The forward linear ran on h and the weight cast to the output's dtype (autocast) or as they were.
        w = weight.to(grad_y.dtype)
        grad_x = grad_w = grad_b = None
        if need_w:
            grad_w = (grad_y.flatten(0, -2).T @ h.detach().to(grad_y.dtype).flatten(0, -2)).to(weight.dtype)
        if need_b and ctx.has_bias:
            grad_b = grad_y.flatten(0, -2).sum(0).to(weight.dtype)
        if need_x:
            (grad_x,) = torch.autograd.grad(h, x_in, (grad_y @ w).to(h.dtype))
        return grad_x, None, grad_w, grad_b
