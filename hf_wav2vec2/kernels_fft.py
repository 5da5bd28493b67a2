"""The positional embedding's grouped 'same' convolution (kernel 128) as an FFT convolution on CPU.

Overlap-save in blocks of n = 3K / 2 frames: the weights' spectra from one matrix product with the DFT's cos and sin
rows, per frequency bin and group one small complex product, then the inverse transform; autograd differentiates
it (every step is linear). Exact up to rounding: in fp32 within 1e-6 of the largest output, in fp64 1e-10, outputs
and the three gradients (``tests/test_ops.py``). Short inputs, other devices and ``torch.compile`` use ``F.conv1d``.
Measurements: docs/performance.md.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .kernels_conv import _compute_dtype


def conv1d_same_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The positional embedding's grouped 'same' convolution over time on channels-last x: (B, T, C_in) ->
    (B, T, C_out), output frame t = sum_k W[:, :, k] x[t - K // 2 + k] within each group, zeros outside [0, T).
    That is ``nn.Conv1d(padding=K // 2, groups=C_in / W.shape[1])`` with the last frame dropped for an even kernel
    (fairseq's SamePad). weight: (C_out, C_in / groups, K).

    On CPU, over long enough inputs, it is an FFT convolution (overlap-save). With kernel 128 and 16 groups of 48
    channels the direct convolution does 4.7 M multiply-adds per frame, and oneDNN's grouped kernel runs them at
    half the machine's matrix-product rate. Transformed, each frequency bin is one 48 x 48 product per group, and
    the weights' spectra cost one (2F x K) by (K x C_out C_in / groups) matrix product per call (F = n / 2 + 1 bins
    of an n = 3K / 2 point transform).
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
    keeps the weights' transform, whose cost grows with n and is most of the work, small (the fastest for K = 128:
    docs/performance.md)."""
    return kernel + max(kernel // 2, 1)


# conv1d_same_channels_last transforms at most this many (item, block) pairs at a time, so that a long input's spectra
# and products stay bounded (BASE: about 4.7 MiB of temporaries a pair, 65 frames). A 2 x 8 s batch or a 10 s item
# is one go.
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
