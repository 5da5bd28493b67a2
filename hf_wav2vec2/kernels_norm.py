"""Group norm of channels-last tensors with a one-formula backward pass, and the first conv layer with its group
norm in one kernel.

- :func:`group_norm_channels_last`: per-channel normalisation over time (fairseq's Fp32GroupNorm) over padding-free
  statistics, its backward one closed formula instead of autograd's graph, both passes over chunks of time whose
  fp32 temporaries stay in cache. Exact: the same formula, computed in fp32 at least.
- :func:`conv_group_norm`: the feature encoder's first layer (one channel, kernel 10): conv + group norm computed
  from the 10-sample windows' mean and covariance, so that no pass over the 512-channel output is needed for the
  statistics, the normalisation or their gradient. Exact: the conv output is linear in the windows, so its
  statistics are those of the windows projected by the weights.

Both are their plain expressions under ``torch.compile``. Gradient tests: ``tests/test_ops.py``. Measurements:
docs/performance.md.
"""

from __future__ import annotations

import torch
from torch import nn

from .kernels_conv import _WINDOW_COPY_MAX, _compute_dtype, _tap_major, _windows, conv1d_channels_last


def group_norm_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                             valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel normalisation over time (``GroupNorm(C, C)``, fairseq's Fp32GroupNorm) of channels-last x
    (B, L, C), statistics in fp32 at least, output in x's dtype. ``valid``: (B, L) bool, or None: the statistics are
    taken over the valid frames only (all frames are normalised with them), so that a padded item gets what it gets
    alone.

    Its backward pass is one formula (dx = r w dy - (m / N) (sum_j r w dy_j + x^ sum_j r w dy_j x^_j), m the frame
    mask, N the valid frames, x^ the normalised input, r the inverse std), not autograd's graph of the forward. Both
    passes work over chunks of time (``NORM_CHUNK_ELEMENTS``) whose fp32 temporaries stay in cache, reading x twice
    instead of making seven fp32 passes over it.
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
