"""Attention with dropout on the probabilities, for CPU training: keeps q, k, v, the dropout mask as bytes and
(for short enough layers) the probabilities in the inputs' dtype, instead of SDPA's math path's three fp32
(B, heads, T, T) tensors, and works over chunks of heads that stay in cache.

Exact: the same softmax, mask and products; each softmax and its gradient computed in fp32 and rounded once;
chunked and unchunked results are bit-identical. Under ``torch.compile`` it traces as an autograd Function.
Accuracy tests against the fp64 formula: ``tests/test_kernels.py``. Measurements: docs/performance.md.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .kernels_dropout import keep_mask


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
    to the fp64 formula as SDPA's math path in bf16: tests/test_kernels.py). The dropout mask comes from the global RNG
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
# temporaries that stay in cache (4 MiB of fp32 scores: the fastest of 2^16-2^22, docs/performance.md). Heads are
# independent, so chunking changes no result.
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
    on CPU)."""

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
