"""The feature encoder's convolution on channels-last (B, L, C) tensors, as matrix products on CPU.

:func:`conv1d_channels_last` is ``conv(x.transpose(1, 2)).transpose(1, 2)`` for an unpadded, ungrouped, undilated
``nn.Conv1d``. On CPU each output frame is a sum of products of strided views of the input with the stacked kernel
taps, which the matrix product reads in place: no layout reorder, which costs oneDNN's convolution more than its
arithmetic. Its backward pass is the same products transposed. Exact: the same sums in another order (fp64 to
1e-12, ``tests/test_kernels.py``). On other devices and under ``torch.compile`` it is ``F.conv1d``.
Measurements: docs/performance.md.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Up to this many input values per output frame (C_in x kernel), the convolution copies its input windows into one
# matrix (the first layer: 1 channel, kernel 10); above, it sums one matrix product per kernel tap.
_WINDOW_COPY_MAX = 64


def conv1d_channels_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` over time on channels-last input: (B, L, C_in) -> (B, L', C_out), as
    ``conv(x.transpose(1, 2)).transpose(1, 2)``. ``conv`` is unpadded, ungrouped and undilated (the feature
    encoder's).

    On CPU it is matrix products: output frame t is ``sum_j x[s t + j] @ W_j`` over the kernel taps j. Taken s
    taps at a time, ``x[s t + m s .. s t + m s + s - 1]`` is one contiguous run of x, so for all t it is a view with
    rows s x C_in apart that a matrix product with K = s C_in reads in place: ceil(k / s) products (kernel 3, stride
    2: two, K = 1024 and 512; the last layers, kernel 2: one) instead of one per tap. That replaces oneDNN's
    convolution, whose layout reorders cost more than its arithmetic. Under autocast it computes in the autocast
    dtype, as the convolution would. Elsewhere (GPU) and under ``torch.compile`` it is
    ``F.conv1d`` on the transposed view.
    """
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, conv.stride).transpose(1, 2)
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return _ConvChannelsLast.apply(x, conv.weight, conv.bias, conv.stride[0])
    return _conv_forward(x, conv.weight, conv.bias, conv.stride[0])


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(x.dtype, weight.dtype)


def _taps(x: torch.Tensor, kernel: int, stride: int, frames: int) -> list[torch.Tensor]:
    """x (B, L, C) contiguous -> for each tap j the (B, frames, C) view of rows j, j + stride, ..."""
    b, length, c = x.shape
    return [x.as_strided((b, frames, c), (length * c, stride * c, 1), x.storage_offset() + j * c)
            for j in range(kernel)]


def _tap_blocks(x: torch.Tensor, kernel: int, stride: int, frames: int) -> list[tuple[int, int, torch.Tensor]]:
    """x (B, L, C) contiguous -> (first tap, taps, view) per block of ``stride`` consecutive taps: block m holds taps
    j = m s .. m s + r - 1 (r = s but for a shorter last block), and its view (B, frames, r C) has row t = the r
    input rows s t + m s .., one contiguous run of x; rows are s C apart, at least a row long, so a matrix product
    reads the view in place. Output frame t is sum_m view_m[t] @ W_m, W_m the block's taps stacked (r C, C_out)."""
    b, length, c = x.shape
    blocks = []
    for first in range(0, kernel, stride):
        taps = min(stride, kernel - first)
        view = x.as_strided((b, frames, taps * c), (length * c, stride * c, 1), x.storage_offset() + first * c)
        blocks.append((first, taps, view))
    return blocks


def _windows(x: torch.Tensor, kernel: int, stride: int, frames: int) -> torch.Tensor:
    """x (B, L, C) contiguous -> (B, frames, kernel x C) copy of each output frame's input window (tap-major)."""
    b, length, c = x.shape
    return x.as_strided((b, frames, kernel * c), (length * c, stride * c, 1)).contiguous()


def _tap_major(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Conv weight (C_out, C_in, k) -> (C_out, k C_in) in ``dtype``, column j C_in + c is W[:, c, j]: the layout of
    :func:`_windows`' rows."""
    out_channels, in_channels, kernel = weight.shape
    return weight.to(dtype).permute(0, 2, 1).reshape(out_channels, kernel * in_channels)


def _stacked_taps(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Conv weight (C_out, C_in, k) -> (k C_in, C_out) in ``dtype``: row j C_in + c is W[:, c, j]."""
    out_channels, in_channels, kernel = weight.shape
    return weight.to(dtype).permute(2, 1, 0).reshape(kernel * in_channels, out_channels)


def _conv_forward(x, weight, bias, stride):
    out_channels, in_channels, kernel = weight.shape
    dtype = _compute_dtype(x, weight)
    if x.device.type != "cpu":
        return F.conv1d(x.to(dtype).transpose(1, 2), weight.to(dtype), None if bias is None else bias.to(dtype),
                        stride).transpose(1, 2)
    with torch.autocast("cpu", enabled=False):
        x = x.to(dtype).contiguous()
        b, length, _ = x.shape
        frames = (length - kernel) // stride + 1
        bias = None if bias is None else bias.to(dtype)
        if in_channels * kernel <= _WINDOW_COPY_MAX:
            w = _tap_major(weight, dtype)
            cols = _windows(x, kernel, stride, frames).view(-1, kernel * in_channels)
            y = cols @ w.T if bias is None else torch.addmm(bias, cols, w.T)
            return y.view(b, frames, out_channels)
        w = _stacked_taps(weight, dtype)
        y = x.new_empty((b, frames, out_channels))
        for first, taps, view in _tap_blocks(x, kernel, stride, frames):
            w_block = w[first * in_channels:(first + taps) * in_channels]
            for i in range(b):
                if first > 0:
                    y[i].addmm_(view[i], w_block)
                elif bias is None:
                    torch.mm(view[i], w_block, out=y[i])
                else:
                    torch.addmm(bias, view[i], w_block, out=y[i])
        return y


def _conv_backward(grad_y, x, weight, has_bias, stride, needs):
    """Gradients of :func:`_conv_forward` for x (B, L, C_in), weight and bias, those that ``needs`` (3 bools)
    asks for: x's in the compute dtype, the weight's and bias's summed in fp32 at least."""
    need_x, need_w, need_b = needs
    out_channels, in_channels, kernel = weight.shape
    dtype = grad_y.dtype  # the forward's compute dtype
    acc = torch.promote_types(weight.dtype, torch.float32)
    if x.device.type != "cpu":
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad_y.transpose(1, 2), x.to(dtype).transpose(1, 2), weight.to(dtype), [out_channels] if has_bias else None,
            [stride], [0], [1], False, [0], 1, [need_x, need_w, need_b and has_bias])
        return (None if gx is None else gx.transpose(1, 2), None if gw is None else gw.to(acc),
                None if gb is None else gb.to(acc))
    with torch.autocast("cpu", enabled=False):
        x, grad_y = x.to(dtype).contiguous(), grad_y.contiguous()
        b, length, _ = x.shape
        frames = grad_y.shape[1]
        grad_x = grad_w = grad_b = None
        if need_b and has_bias:
            grad_b = grad_y.sum((0, 1), dtype=acc)
        if in_channels * kernel <= _WINDOW_COPY_MAX:
            g = grad_y.view(-1, out_channels)
            w = _tap_major(weight, dtype)
            if need_w:
                cols = _windows(x, kernel, stride, frames).view(-1, kernel * in_channels)
                grad_w = (g.T @ cols).to(acc).view(out_channels, kernel, in_channels).permute(0, 2, 1)
            if need_x:
                grad_cols = (g @ w).view(b, frames, kernel, in_channels)
                grad_x = torch.zeros_like(x)
                for j, tap in enumerate(_taps(grad_x, kernel, stride, frames)):
                    tap.add_(grad_cols[:, :, j])
            return grad_x, grad_w, grad_b
        if need_w:  # the rows of block m: sum over items of view_m^T @ dY
            grad_w = torch.empty((kernel * in_channels, out_channels), dtype=acc, device=x.device)
            for first, taps, view in _tap_blocks(x, kernel, stride, frames):
                rows = grad_w[first * in_channels:(first + taps) * in_channels]
                for i in range(b):
                    if dtype == acc:
                        torch.addmm(rows, view[i].T, grad_y[i], beta=int(i > 0), out=rows)
                    elif i == 0:
                        rows.copy_(view[i].T @ grad_y[i])
                    else:
                        rows.add_(view[i].T @ grad_y[i])
            grad_w = grad_w.view(kernel, in_channels, out_channels).permute(2, 1, 0)
        if need_x:  # block m's rows of dX get dY @ W_m^T; block 0 covers the first s (frames - 1) + s rows
            w = _stacked_taps(weight, dtype)
            grad_x = torch.empty_like(x)
            if kernel < stride:  # rows between the windows get nothing
                grad_x.zero_()
            else:
                grad_x[:, stride * frames:].zero_()
            for first, taps, view in _tap_blocks(grad_x, kernel, stride, frames):
                w_block_t = w[first * in_channels:(first + taps) * in_channels].T
                for i in range(b):
                    if first == 0:
                        torch.mm(grad_y[i], w_block_t, out=view[i])
                    else:
                        view[i].addmm_(grad_y[i], w_block_t)
        return grad_x, grad_w, grad_b


class _ConvChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        ctx.stride, ctx.has_bias = stride, bias is not None
        ctx.save_for_backward(x, weight)
        return _conv_forward(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = _conv_backward(grad_y, x, weight, ctx.has_bias, ctx.stride, (need_x, need_w, need_b))
        return (None if grad_x is None else grad_x.to(x.dtype), None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(weight.dtype), None)
