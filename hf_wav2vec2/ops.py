"""Memory- and time-saving autograd kernels: each computes exactly what its plain PyTorch expression computes, but
keeps fewer tensors for the backward pass and recomputes the cheap rest there, or takes a faster way on CPU.

The model calls each in one line. With gradients off (inference, a frozen encoder) the memory-saving ones are
their plain expressions; the faster CPU ways (the channels-last convolutions and norm, the FFT convolution) stay.
Every kernel has a gradient test against its plain expression in ``tests/test_ops.py``.

Under ``torch.compile`` (``W2V2PreTrainedModel.compile_stages``) every kernel traces without a graph break:
``grad_multiply`` and ``dropout_attention`` are traced as autograd Functions (their backward passes are plain tensor
code); ``activate_then_conv`` and ``activate_then_linear``, whose backward passes call ``torch.autograd.grad``,
become their plain expressions there, and the compiler's partitioner chooses what to keep for the backward pass and
what to recompute, for the whole graph (inductor's min-cut partitioner recomputes cheap elementwise work);
``conv1d_channels_last``, ``conv1d_same_channels_last``, ``group_norm_channels_last`` and ``conv_group_norm``
become ``F.conv1d`` and their forward formula.

- :func:`grad_multiply`: identity forward, scaled gradient (fairseq ``GradMultiply``, ``feature_grad_mult``).
- :func:`activate_then_conv`: ``conv(activate(x))`` keeping only ``x`` (the feature encoder, one tensor per layer).
- :func:`dropout_attention`: attention with dropout on the probabilities; on CPU it keeps q, k, v and a bool mask
  instead of three (B, heads, T, T) fp32 tensors.
- :func:`activate_then_linear`: ``linear(act(x))`` keeping only ``x`` (the feed-forward's inner activation).
- :func:`dropout` (and the module :class:`Dropout`): dropout whose CPU mask costs a tenth of torch's.
- :func:`conv1d_channels_last`, :func:`group_norm_channels_last`: the feature encoder's convolution and group norm on
  (B, L, C) tensors, as matrix products and with a one-formula backward pass.
- :func:`conv_group_norm`: the first layer's convolution and group norm in one, its statistics from the 10-sample
  windows' covariance (no pass over the 512-channel output for them), its backward pass one small product.
- :func:`conv1d_same_channels_last`: the positional embedding's grouped convolution (kernel 128), as an FFT
  convolution on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

# activate_then_conv works over batch slices of at most this many input elements (16 MiB of fp32).
SLICE_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------------- grad_multiply
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


# ---------------------------------------------------------------------------------------- conv1d_channels_last
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
    convolution, whose layout reorders cost more than its arithmetic. BASE, 2 x 8 s, the second layer (512 -> 512,
    kernel 3, stride 2), forward / backward, one product per tap: bf16 56 / 162 ms against 199 / 388 ms, fp32 143 /
    376 against 273 / 886 ms; the first layer (kernel 10, one channel) bf16 23 / 16 against 152 / 72 ms. Per block
    instead of per tap, the whole bf16 feature encoder, forward and backward, took 571-627 ms against 647-665 in
    the fastest three of 20 turns each (medians equal, 886 and 890: a noisy machine). Under autocast
    it computes in the autocast dtype, as the convolution would. Elsewhere (GPU) and under ``torch.compile`` it is
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


# --------------------------------------------------------------------------------------- group_norm_channels_last
def group_norm_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel normalisation over time (``GroupNorm(C, C)``, fairseq's Fp32GroupNorm) of channels-last x
    (B, L, C), statistics in fp32 at least, output in x's dtype. ``valid``: (B, L) bool, or None: the statistics are
    taken over the valid frames only (all frames are normalised with them), so that a padded item gets what it gets
    alone.

    Its backward pass is one formula (dx = r w dy - (m / N) (sum_j r w dy_j + x^ sum_j r w dy_j x^_j), m the frame
    mask, N the valid frames, x^ the normalised input, r the inverse std), not autograd's graph of the forward (12 ms
    against 33, TINY 4 s item). Both passes work over chunks of time (``NORM_CHUNK_ELEMENTS``) whose fp32
    temporaries stay in cache, reading x twice instead of making seven fp32 passes over it: a BASE 8 s item in bf16,
    forward and backward, 127-184 ms against 199-263 ms unchunked (in turns, while another job shared the CPU).
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad) \
            and not torch.compiler.is_compiling():
        return _GroupNormChannelsLast.apply(x, weight, bias, eps, valid)
    return _group_norm_forward(x, weight, bias, eps, valid)[0]


# On CPU the group norm works over chunks of time of at most this many elements, so that each chunk's fp32
# temporaries stay in cache: two passes over x (statistics, then output) instead of seven over fp32 copies of it.
# A GPU takes the whole tensor at once (one kernel per op).
NORM_CHUNK_ELEMENTS = 1 << 18


def _time_chunks(x: torch.Tensor, elements: int | None = None) -> list[slice]:
    """Slices of x's time axis (dim 1) of at most ``elements`` (default ``NORM_CHUNK_ELEMENTS``) elements each."""
    if x.device.type != "cpu":
        return [slice(None)]
    step = max(1, (elements or NORM_CHUNK_ELEMENTS) // max(1, x.shape[0] * x.shape[2]))
    return [slice(t, t + step) for t in range(0, x.shape[1], step)]


def _group_norm_statistics(x, valid):
    """Per item and channel mean and variance over (the valid frames of) time, (B, 1, C) in fp32 at least, merged
    over time chunks with Chan et al.'s pairwise update (no E[x^2] - E[x]^2 cancellation)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    mean = m2 = count = None
    for t in _time_chunks(x):
        chunk = x[:, t].to(dtype)  # (B, l, C)
        if valid is None:
            n = torch.full((x.shape[0], 1, 1), float(chunk.shape[1]), dtype=dtype, device=x.device)
            chunk_mean = chunk.mean(1, keepdim=True)
            chunk_m2 = (chunk - chunk_mean).square_().sum(1, keepdim=True)
        else:
            m = valid[:, t, None].to(dtype)  # (B, l, 1)
            n = m.sum(1, keepdim=True)
            chunk_mean = (chunk * m).sum(1, keepdim=True) / n.clamp_min(1.0)
            chunk_m2 = ((chunk - chunk_mean).square_() * m).sum(1, keepdim=True)
        if mean is None:
            mean, m2, count = chunk_mean, chunk_m2, n
            continue
        total = count + n
        delta = chunk_mean - mean
        mean = mean + delta * (n / total.clamp_min(1.0))
        m2 = m2 + chunk_m2 + delta.square() * (count * n / total.clamp_min(1.0))
        count = total
    return mean, m2 / count.clamp_min(1.0)


def _group_norm_forward(x, weight, bias, eps, valid):
    """(y in x's dtype, mean, inverse std (B, 1, C) in fp32 at least)."""
    mean, var = _group_norm_statistics(x, valid)
    inv_std = torch.rsqrt(var + eps)
    scale = inv_std * weight  # (B, 1, C)
    y = torch.empty_like(x)
    for t in _time_chunks(x):  # (x - mean) r w + b, per chunk in cache (x r w + (b - mean r w) would cancel)
        y[:, t] = x[:, t].to(scale.dtype, copy=True).sub_(mean).mul_(scale).add_(bias)
    return y, mean, inv_std


class _GroupNormChannelsLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, valid):
        y, mean, inv_std = _group_norm_forward(x, weight, bias, eps, valid)
        ctx.save_for_backward(x, weight, mean, inv_std, valid)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, inv_std, valid = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        acc = mean.dtype
        sum_dy = torch.zeros_like(mean)
        sum_dy_x_hat = torch.zeros_like(mean)
        for t in _time_chunks(x):  # pass 1: sum(dy), sum(dy x^) per item and channel
            dy = grad_y[:, t].to(acc)
            x_hat = x[:, t].to(acc, copy=True).sub_(mean).mul_(inv_std)
            sum_dy += dy.sum(1, keepdim=True)
            sum_dy_x_hat += (dy * x_hat).sum(1, keepdim=True)
        grad_w = sum_dy_x_hat.sum((0, 1)).to(weight.dtype) if need_w else None
        grad_b = sum_dy.sum((0, 1)).to(weight.dtype) if need_b else None
        if not need_x:
            return None, grad_w, grad_b, None, None
        # dx = r w dy - (m / N) (r w sum(dy) + x^ r w sum(dy x^)), r the inverse std, m the frame mask
        scale = inv_std * weight  # (B, 1, C)
        count = torch.full_like(mean[:, :, :1], x.shape[1]) if valid is None \
            else valid[:, :, None].to(acc).sum(1, keepdim=True).clamp_min(1.0)  # N, (B, 1, 1)
        c1, c2 = sum_dy * scale / count, sum_dy_x_hat * scale / count
        grad_x = torch.empty_like(x)
        for t in _time_chunks(x):  # pass 2
            correction = x[:, t].to(acc, copy=True).sub_(mean).mul_(inv_std).mul_(c2).add_(c1)
            if valid is not None:
                correction.mul_(valid[:, t, None])
            grad_x[:, t] = torch.mul(grad_y[:, t].to(acc), scale).sub_(correction)
        return grad_x, grad_w, grad_b, None, None


# ------------------------------------------------------------------------------------------- conv_group_norm
# conv_group_norm computes its output, and reads the output gradient, in fp32 time chunks of at most this many
# elements.
_CONV_NORM_CHUNK_ELEMENTS = 1 << 20


def conv_group_norm(x: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm, valid: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """``group_norm_channels_last(conv1d_channels_last(x, conv), norm.weight, norm.bias, norm.eps, valid)`` for a
    convolution with few inputs per frame (the feature encoder's first layer: one channel, kernel 10), by way of the
    convolution's inputs. x: (B, L, C_in) channels-last; valid: (B, L') bool real frames or None. (B, L', C_out).

    The conv output h_t = W a_t is linear in the frame's window a_t (k C_in values), so its statistics over time come
    from the windows' own: mean_c = W_c . m and var_c = W_c^T S W_c, with m and S the mean and the (k C_in) x (k C_in)
    covariance of the windows (over the valid frames). The normalised output is then one matrix product of the
    centred windows with the weights scaled by gamma / std, plus beta: no pass over the (L', C_out) output for its
    statistics and none for normalising it. The backward pass is as short: with dY the output's gradient, Q = sum_t
    (a_t - m) dY_t^T (one (k C_in) x C_out product, fp32) gives dgamma_c = r_c W_c . Q_c, dbeta_c = sum_t dY_tc and
    dW_c = gamma_c r_c (Q_c - r_c^2 (W_c . Q_c) S W_c), r the inverse std (the statistics' dependence on W included).
    The convolution's bias, which the norm subtracts again, gets a zero gradient. Statistics, the output product and
    both formulas in fp32 at least (in bf16 the product would not be quite the function whose statistics were taken:
    the weight gradient was 6x less accurate for a loss that mostly rescales the output); under autocast the output
    is rounded once to bf16.

    Used on CPU, with gradients for the weights only (the audio needs none) and k C_in <= ``_WINDOW_COPY_MAX``;
    elsewhere, and under ``torch.compile``, it is the two-op expression.
    """
    weight = conv.weight
    out_channels, in_channels, kernel = weight.shape
    if (x.device.type != "cpu" or torch.compiler.is_compiling() or in_channels * kernel > _WINDOW_COPY_MAX
            or (torch.is_grad_enabled() and x.requires_grad)):
        return group_norm_channels_last(conv1d_channels_last(x, conv), norm.weight, norm.bias, norm.eps, valid)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (weight, norm.weight, norm.bias)):
        return _ConvGroupNorm.apply(x, weight, conv.bias, norm.weight, norm.bias, norm.eps, valid, conv.stride[0])
    return _conv_group_norm_forward(x, weight, norm.weight, norm.bias, norm.eps, valid, conv.stride[0])[0]


def _conv_group_norm_forward(x, weight, gamma, beta, eps, valid, stride):
    """(output, centred windows (B, L', k C_in), window covariance (B, kC, kC), inverse std (B, 1, C_out), tap-major
    weight (C_out, kC)), all but the output in fp32 at least."""
    out_channels, in_channels, kernel = weight.shape
    dtype = _compute_dtype(x, weight)
    acc = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
    with torch.autocast("cpu", enabled=False):
        b, length, _ = x.shape
        frames = (length - kernel) // stride + 1
        cols = _windows(x.to(acc).contiguous(), kernel, stride, frames)  # (B, L', kC)
        cov = cols.new_empty((b, kernel * in_channels, kernel * in_channels))
        for i in range(b):  # over the item's real frames only, as the same item alone: equal bit for bit
            real = cols[i] if valid is None else cols[i][valid[i]]
            count = max(real.shape[0], 1)
            mean = real.sum(0) / count
            real = real - mean
            cov[i] = real.T @ real / count
            cols[i] -= mean
        w = _tap_major(weight, acc)
        var = ((w @ cov) * w).sum(-1).clamp_min(0.0)  # (B, C_out): W_c^T S W_c
        inv_std = torch.rsqrt(var + eps)[:, None, :]  # (B, 1, C_out)
        scaled = w * (inv_std * gamma.to(acc)).transpose(1, 2)  # (B, C_out, kC)
        y = torch.empty((b, frames, out_channels), dtype=dtype, device=x.device)
        scaled_t, shift = scaled.transpose(1, 2), beta.to(acc).expand(b, 1, out_channels)
        for t in _time_chunks(y, _CONV_NORM_CHUNK_ELEMENTS):  # the product in fp32, in cache, rounded once into y
            y[:, t] = torch.baddbmm(shift, cols[:, t], scaled_t)
    return y, cols, cov, inv_std, w


class _ConvGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps, valid, stride):
        y, cols, cov, inv_std, w = _conv_group_norm_forward(x, weight, gamma, beta, eps, valid, stride)
        ctx.save_for_backward(cols, cov, inv_std, w, weight, bias, gamma, beta)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        cols, cov, inv_std, w, weight, bias, gamma, beta = ctx.saved_tensors
        acc = cols.dtype
        out_channels, in_channels, kernel = weight.shape
        with torch.autocast("cpu", enabled=False):
            # Q = sum_t (a_t - m) dY_t^T (B, kC, C_out) and sum_t dY_t, in fp32 over time chunks of dY
            q = cols.new_zeros((cols.shape[0], cols.shape[2], out_channels))
            grad_beta = cols.new_zeros(out_channels)
            for t in _time_chunks(grad_y, _CONV_NORM_CHUNK_ELEMENTS):
                dy = grad_y[:, t].to(acc)
                q.baddbmm_(cols[:, t].transpose(1, 2), dy)
                grad_beta += dy.sum((0, 1))
            r = inv_std.transpose(1, 2)  # (B, C_out, 1)
            w_dot_q = (w * q.transpose(1, 2)).sum(-1, keepdim=True)  # (B, C_out, 1): W_c . Q_c
            grad_gamma = (r * w_dot_q).sum((0, 2))
            g = gamma.to(acc)[None, :, None]
            grad_w = (g * r * (q.transpose(1, 2) - r.square() * w_dot_q * (w @ cov))).sum(0)  # (C_out, kC)
            grad_w = grad_w.view(out_channels, kernel, in_channels).permute(0, 2, 1)
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        return (None, grad_w.to(weight.dtype), grad_bias, grad_gamma.to(gamma.dtype), grad_beta.to(beta.dtype), None,
                None, None)


# ------------------------------------------------------------------------------------ conv1d_same_channels_last
def conv1d_same_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The positional embedding's grouped 'same' convolution over time on channels-last x: (B, T, C_in) ->
    (B, T, C_out), output frame t = sum_k W[:, :, k] x[t - K // 2 + k] within each group, zeros outside [0, T).
    That is ``nn.Conv1d(padding=K // 2, groups=C_in / W.shape[1])`` with the last frame dropped for an even kernel
    (fairseq's SamePad). weight: (C_out, C_in / groups, K).

    On CPU, over long enough inputs, it is an FFT convolution (overlap-save). With kernel 128 and 16 groups of 48
    channels the direct convolution does 4.7 M multiply-adds per frame, and oneDNN's grouped kernel runs them at
    half the machine's matrix-product rate. Transformed, each frequency bin is one 48 x 48 product per group, and
    the weights' spectra cost one (2F x K) by (K x C_out C_in / groups) matrix product per call (F = n / 2 + 1 bins
    of an n = 3K / 2 point transform). BASE, 2 cores, fp32 (88-105 GFLOP/s): forward 34-38 ms against 77-82 for
    one 10 s item; forward and backward 141-147 ms against 445-454 for 2 x 8 s.
    It computes in fp32 at least (under autocast too; the output is then rounded to the autocast dtype, as the
    convolution's would be) and differs from the direct sum by rounding only (in fp32 by less than 1e-6 of the
    largest output, tested).
    Autograd differentiates it (the transforms are linear); for the backward pass it keeps the weights' spectra
    (27 MiB for BASE) and the input spectra (16 MiB for 2 x 8 s). Short inputs (fewer than 2n frames in the batch,
    where the weights' transform would cost more than the direct convolution), other devices (untested there) and
    ``torch.compile`` get ``F.conv1d``.
    """
    b, t, _ = x.shape
    kernel = weight.shape[2]
    n = _fft_length(kernel)
    if x.device.type != "cpu" or torch.compiler.is_compiling() or b * t < 2 * n:
        groups = x.shape[2] // weight.shape[1]
        y = F.conv1d(x.transpose(1, 2), weight, bias, padding=kernel // 2, groups=groups)  # (B, C_out, T (+1))
        return y[:, :, :t].transpose(1, 2)
    return _conv_same_fft(x, weight, bias, n)


def _fft_length(kernel: int) -> int:
    """Transform length n for a kernel of K taps: each block of n input frames yields n - K + 1 output frames. 3K / 2
    was the fastest for K = 128 (192 against 256 and 384): the weights' transform, whose cost grows with n, is most
    of the work."""
    return kernel + max(kernel // 2, 1)


# conv1d_same_channels_last transforms at most this many (item, block) pairs at a time, so that a long input's spectra
# and products stay bounded (BASE: about 4.7 MiB of temporaries a pair, 65 frames). A 2 x 8 s batch or a 10 s item
# is one go; one 10 min item took 1.2 s and about as much memory as the direct convolution (4.8 s).
_FFT_COLUMNS = 16


def _conv_same_fft(x, weight, bias, n):
    b, t, in_channels = x.shape
    out_channels, group_in, kernel = weight.shape
    groups = in_channels // group_in
    group_out = out_channels // groups
    out_dtype = _compute_dtype(x, weight)
    acc = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
    hop = n - kernel + 1  # output frames per block
    blocks = -(-t // hop)
    bins = n // 2 + 1
    with torch.autocast("cpu", enabled=False):
        # 1. The weights' conjugate spectra (cross-correlation), by one product with the DFT's cos and sin rows; its
        # result is already bin-major: [re, im] x F groups matrices (C_out / groups, C_in / groups).
        angle = torch.outer(torch.arange(kernel, dtype=torch.float64, device=x.device),
                            torch.arange(bins, dtype=torch.float64, device=x.device)) * (2 * torch.pi / n)
        dft = torch.cat([angle.cos(), angle.sin()], 1).to(acc)  # (K, 2F)
        taps = weight.to(acc).reshape(out_channels * group_in, kernel)  # (C_out C_in / groups, K)
        ws = (dft.T @ taps.T).view(2 * bins * groups, group_out, group_in)
        # 2. Overlapping input blocks (n frames, hop apart) of the zero-padded input. Output frame j hop + m reads
        # padded frames j hop + m .. j hop + m + K - 1, all inside block j: no wrap-around.
        padded = F.pad(x.to(acc), (0, 0, kernel // 2, blocks * hop + kernel - 1 - kernel // 2 - t))
        parts = []
        step = max(1, _FFT_COLUMNS // b)
        for first in range(0, blocks, step):
            count = min(step, blocks - first)
            cols = b * count
            windows = padded.as_strided((b, count, n, in_channels), (padded.shape[1] * in_channels,
                                        hop * in_channels, in_channels, 1),
                                        padded.storage_offset() + first * hop * in_channels)  # (B, count, n, C_in)
            spectra = torch.view_as_real(torch.fft.rfft(windows, dim=2))  # (B, count, F, C_in, [re, im])
            xs = (spectra.view(cols, bins, groups, group_in, 2).permute(1, 2, 3, 4, 0)
                  .reshape(bins * groups, group_in, 2 * cols))  # (F groups, C_in / groups, [re, im] x cols)
            # 3. Per bin and group, Y = conj(W) X = (Re W* Re X - Im W* Im X) + i (Re W* Im X + Im W* Re X): one
            # batched product of both parts of W* with both parts of X (the weights' spectra used as they come).
            products = torch.bmm(ws, xs.expand(2, *xs.shape).reshape(2 * bins * groups, group_in, 2 * cols))
            (p_real, p_imag), (q_real, q_imag) = [part.unbind(3) for part in
                                                  products.view(2, bins, groups, group_out, 2, cols).unbind(0)]
            ys = torch.complex(p_real - q_imag, p_imag + q_real).view(bins, out_channels, cols).permute(2, 0, 1)
            parts.append(torch.fft.irfft(ys, n=n, dim=1)[:, :hop].reshape(b, count * hop, out_channels))
        y = (parts[0] if len(parts) == 1 else torch.cat(parts, 1))[:, :t]  # (B, T, C_out)
        if bias is not None:
            y = y + bias.to(acc)
    return y.to(out_dtype)


# ------------------------------------------------------------------------------------------ activate_then_conv
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


# ------------------------------------------------------------------------------------------------------ dropout
# keep_mask draws 16-bit uniforms: a drop probability p becomes round(p * 2^16) / 2^16.
_MASK_BITS = 16


def keep_mask(shape: Sequence[int], p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A bool dropout mask of ``shape`` (True: keep) from the global RNG, and the scale ``1 / (1 - p')`` for it.

    On CPU, ``bernoulli_`` draws one random number per element: 45 ms for the (2, 12, 400, 400) attention mask of
    BASE, 2 x 8 s, which made it the largest single cost of a bf16 training step. Here each 64-bit draw of
    ``randint`` gives four 16-bit uniforms u, and an element is kept where u >= round(p * 2^16): 5 ms for the same
    mask (and ``torch.compile`` traces it). The drop probability is then p' = round(p * 2^16) / 2^16 (0.100006 for
    0.1, |p' - p| <= 2^-17), and the scale ``1 / (1 - p')`` keeps the expectation exact. Elsewhere (GPU) it is
    ``bernoulli_(1 - p)`` and p' = p.
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
    # compared into uint8, viewed as bool: 0.8 ms against 2.0 for a bool result (BASE's attention mask)
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


_dropout = dropout  # for activate_then_linear, whose argument is named dropout


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


# ------------------------------------------------------------------------------------------- dropout_attention
def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                      dropout: float) -> torch.Tensor:
    """``dropout(softmax(q k^T / sqrt(d) + mask)) v``: ``F.scaled_dot_product_attention`` with ``dropout_p``.

    q, k, v: (B, heads, T, d); key_mask: (B, 1, 1, T) bool (True: may be attended) or None. Returns (B, heads, T, d).

    Saves: torch's CPU flash kernel has no dropout, and its math fallback keeps three fp32 (B, heads, T, T) tensors
    per layer. On CPU with gradients and dropout, this keeps q, k, v, the dropout mask as bytes and the
    probabilities in the inputs' dtype (bf16 in training; BASE, 2 x 8 s: 16 MiB per layer, 7 of them the
    probabilities, instead of 44 MiB); when the probabilities would take more than ``SAVED_PROBABILITIES_MAX``
    elements it keeps q, k, v and the mask only and recomputes them in the backward pass (the flash-attention
    scheme, unblocked). The formula is the same; scores, probabilities and their gradients are in the inputs' dtype,
    as SDPA's math path has them, with each softmax and softmax gradient computed in fp32 and rounded once (as close
    to the fp64 formula as SDPA's math path in bf16: tests/test_ops.py). The dropout mask comes from the global RNG
    (:func:`keep_mask`). Elsewhere (GPU, no dropout, no gradient) it is SDPA itself.
    """
    if dropout > 0 and q.device.type == "cpu" and torch.is_grad_enabled():
        return _DropoutAttention.apply(q, k, v, key_mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)


def _attention_probabilities(q, k, key_bias, out=None):
    """softmax(q k^T + mask) (B, heads, T, T) in q's dtype: q already scaled by 1 / sqrt(d); the product q k^T in
    q's dtype (bf16 under autocast) and the softmax computed in fp32 and rounded once to it. key_bias: (B, 1, 1, T)
    0 / -inf in q's dtype, or None; out: a contiguous tensor to write the probabilities to, or None."""
    scores = torch.matmul(q, k.transpose(-2, -1))
    if key_bias is not None:
        scores.add_(key_bias)
    if out is None:
        return torch.softmax(scores, dim=-1)
    return torch._softmax(scores, -1, False, out=out)


# On CPU the attention kernel below works on chunks of (item, heads) of at most this many score elements (a whole
# head when one head is larger), so that each step of the softmax and its gradient works on (heads, T, T)
# temporaries that stay in cache. Heads are independent, so chunking changes no result. 2^20 (4 MiB of fp32
# scores), measured against 2^16-2^22 on a 2-core Xeon with 2 MiB of L2 per core, bf16, one layer forward and
# backward alone: BASE 2 x 8 s 31 ms against 65 unchunked; 4 x 12 s at 4 heads 48 against 102; 1 x 30 s 270 against
# 603. A whole BASE bf16 training step, in turns in one process: 1 x 30 s 5.6 s against 9.0; 2 x 8 s 2.57 against
# 2.61 (within noise).
ATTENTION_CHUNK_ELEMENTS = 1 << 20

# The attention kernel keeps each layer's probabilities for the backward pass when they are at most this many
# elements (32 MiB in bf16: BASE, 2 x 8 s, is 3.8 M), and recomputes them from q and k when they are more.
SAVED_PROBABILITIES_MAX = 1 << 24


def _head_chunks(batch: int, heads: int, elements_per_head: int) -> list[tuple[slice, slice]]:
    """(item slice, head slice) pairs covering (batch, heads), each of at most ``ATTENTION_CHUNK_ELEMENTS`` score
    elements (at least one head)."""
    per_chunk = max(1, ATTENTION_CHUNK_ELEMENTS // max(1, elements_per_head))
    if per_chunk >= batch * heads:
        return [(slice(None), slice(None))]
    if per_chunk >= heads:
        items = per_chunk // heads
        return [(slice(b, b + items), slice(None)) for b in range(0, batch, items)]
    return [(slice(b, b + 1), slice(h, h + per_chunk)) for b in range(batch) for h in range(0, heads, per_chunk)]


class _DropoutAttention(torch.autograd.Function):
    """q is scaled by 1 / sqrt(d) before the product (exact for a power-of-two head size). Both passes run over
    chunks of heads (:data:`ATTENTION_CHUNK_ELEMENTS`); the dropout mask is drawn whole first, so the chunking does
    not change which elements are dropped. The keep mask is read as uint8 (ops on bool tensors are not vectorised
    on CPU). BASE, 2 x 8 s, one layer in bf16, forward and backward: 35 ms against 75 ms for the previous kernel
    (fp32 scores and softmax, probabilities recomputed), profiled in one process; a whole bf16 training step in
    turns with the previous kernel, 12 turns: median per-turn ratio 1.23x (1.12x and 1.19x in two 10-turn runs),
    1.08x of it with the probabilities recomputed."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, p):
        q = q * q.shape[-1] ** -0.5
        key_bias = None
        if key_mask is not None:
            key_bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~key_mask,
                                                                                                float("-inf"))
        keep, scale = keep_mask((*q.shape[:-1], k.shape[-2]), p)  # global RNG, the whole mask at once
        keep = keep.view(torch.uint8)
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        saved = q.new_empty(keep.shape) if keep.numel() <= SAVED_PROBABILITIES_MAX else None
        for items, heads in _head_chunks(q.shape[0], q.shape[1], q.shape[-2] * k.shape[-2]):
            bias = None if key_bias is None else key_bias[items]
            if saved is None:
                dropped = _attention_probabilities(q[items, heads], k[items, heads], bias).mul_(keep[items, heads])
            else:
                probs = _attention_probabilities(q[items, heads], k[items, heads], bias, out=saved[items, heads])
                dropped = probs * keep[items, heads]
            out[items, heads] = torch.matmul(dropped, v[items, heads])
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, key_bias, keep, saved)
        return out.mul_(scale)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_bias, keep, saved = ctx.saved_tensors  # q: scaled by 1 / sqrt(d)
        grad_out = grad_out.to(v.dtype)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for items, heads in _head_chunks(q.shape[0], q.shape[1], q.shape[-2] * k.shape[-2]):
            q_c, k_c, v_c = q[items, heads], k[items, heads], v[items, heads]
            grad_out_c, keep_c = grad_out[items, heads], keep[items, heads].to(v.dtype)  # used twice: cast once
            if saved is not None:
                probs = saved[items, heads]
            else:
                probs = _attention_probabilities(q_c, k_c, None if key_bias is None else key_bias[items])
            grad_v[items, heads] = torch.matmul((probs * keep_c).transpose(-2, -1), grad_out_c)
            # With O = scale * (P * keep) V: dP = scale * keep * dO V^T, and dS = P * (dP - sum_j P_j dP_j) is
            # softmax's own gradient kernel; everything before the products is dS / scale.
            grad_probs = torch.matmul(grad_out_c, v_c.transpose(-2, -1)).mul_(keep_c)
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del grad_probs, probs
            grad_q[items, heads] = torch.matmul(grad_scores, k_c)
            grad_k[items, heads] = torch.matmul(grad_scores.transpose(-2, -1), q_c)
        scale = ctx.scale
        return grad_q.mul_(scale * q.shape[-1] ** -0.5), grad_k.mul_(scale), grad_v.mul_(scale), None, None


# ---------------------------------------------------------------------------------------- activate_then_linear
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
