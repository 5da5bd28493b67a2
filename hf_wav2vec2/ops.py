"""Memory-saving autograd kernels: each computes exactly what its plain PyTorch expression computes, but keeps fewer
tensors for the backward pass and recomputes the cheap rest there.

The model calls each in one line; with gradients off (inference, a frozen encoder) each is its plain expression.
Every kernel has a gradient test against that expression in ``tests/test_ops.py``.

Under ``torch.compile`` (``W2V2PreTrainedModel.compile_stages``) every kernel traces without a graph break:
``grad_multiply`` and ``dropout_attention`` are traced as autograd Functions (their backward passes are plain tensor
code); ``activate_then_conv`` and ``activate_then_linear``, whose backward passes call ``torch.autograd.grad``,
become their plain expressions there, and the compiler's partitioner chooses what to keep for the backward pass and
what to recompute, for the whole graph (inductor's min-cut partitioner recomputes cheap elementwise work).

- :func:`grad_multiply`: identity forward, scaled gradient (fairseq ``GradMultiply``, ``feature_grad_mult``).
- :func:`activate_then_conv`: ``conv(activate(x))`` keeping only ``x`` (the feature encoder, one tensor per layer).
- :func:`dropout_attention`: attention with dropout on the probabilities; on CPU it keeps q, k, v and a bool mask
  instead of three (B, heads, T, T) fp32 tensors.
- :func:`activate_then_linear`: ``linear(act(x))`` keeping only ``x`` (the feed-forward's inner activation).
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


# ------------------------------------------------------------------------------------------ activate_then_conv
def activate_then_conv(
    x: torch.Tensor,
    activate: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    conv: nn.Conv1d,
    valid: torch.Tensor | None = None,
    activate_params: Sequence[torch.Tensor] = (),
    item_elements: int | None = None,
) -> torch.Tensor:
    """``conv(activate(x, valid))`` that saves only ``x`` for the backward pass.

    x: (B, C, L) the previous conv layer's output; activate: that layer's norm + activation, ``(x, valid) -> same
    shape``, acting within each item; valid: (B, L) bool real frames for the norm, or None; activate_params: the
    parameters ``activate`` uses (its norm's weight and bias), so that their gradients flow like any parameter's;
    item_elements: elements per item of ``activate``'s output when it is larger than ``x`` (``activate`` may itself
    hold a convolution, as the feature encoder's first layer does), for sizing the batch slices; default ``x``'s.

    Saves: the plain graph keeps three tensors of the conv output's size per layer (conv output, normalised,
    activated); at 16 kHz the first layers' outputs are the largest activations of the model (BASE, 2 x 8 s: 100 MiB
    each), so this keeps a third of the feature encoder's activations. Both passes run over slices of the batch
    (whole items, at most ``SLICE_ELEMENTS`` input elements), so their temporaries are a slice's, not the batch's.
    Exact: the backward recomputes ``activate`` (elementwise work and one reduction) under the forward's autocast
    state; gradients equal the plain graph's up to summation order. Without gradients, and under ``torch.compile``
    (see the module docstring), it is the plain expression.
    """
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        return conv(activate(x, valid))
    return _ActivateThenConv.apply(x, valid, activate, conv, item_elements, conv.weight, conv.bias, *activate_params)


def _batch_slices(x: torch.Tensor, item_elements: int | None = None, min_items: int = 1) -> list[slice]:
    step = max(min_items, SLICE_ELEMENTS // max(1, item_elements or x[0].numel()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _min_slice_items(device_type: str, autocast: tuple[bool, torch.dtype]) -> int:
    """Items per slice at least: 1, but the thread count where a bf16/fp16 CPU convolution has no oneDNN kernel (a
    CPU without bf16/fp16 instructions). torch's fallback convolution then parallelises over the batch only, and
    one-item slices ran on one thread: a TINY 8 x 4 s bf16 feature encoder step took 29 s instead of 21 s."""
    enabled, dtype = autocast
    if device_type != "cpu" or not enabled or dtype not in (torch.bfloat16, torch.float16):
        return 1
    supported = torch.ops.mkldnn._is_mkldnn_bf16_supported if dtype == torch.bfloat16 \
        else torch.ops.mkldnn._is_mkldnn_fp16_supported
    return 1 if torch.backends.mkldnn.is_available() and supported() else torch.get_num_threads()


class _ActivateThenConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, valid, activate, conv, item_elements, weight, bias, *activate_params):
        device_type = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.activate, ctx.conv, ctx.item_elements = activate, conv, item_elements
        ctx.save_for_backward(x, valid, weight)
        ctx.activate_params = activate_params  # parameters: kept alive by their module anyway
        ctx.min_items = _min_slice_items(device_type, ctx.autocast)
        slices = _batch_slices(x, item_elements, ctx.min_items)
        if len(slices) == 1:
            return conv(activate(x, valid))
        out = None
        for s in slices:
            y = conv(activate(x[s], None if valid is None else valid[s]))  # (b, C_out, L')
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
        grad_y = grad_y.contiguous()
        for s in _batch_slices(x, ctx.item_elements, ctx.min_items):
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                x_in = x[s].detach().requires_grad_(need_x)
                h = ctx.activate(x_in, None if valid is None else valid[s])
            wanted = [t for t, need in zip((x_in, *ctx.activate_params), (need_x, *need_params)) if need]
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
            for i, need in enumerate(need_params):
                if need:
                    g = next(grads)
                    grad_params[i] = g if grad_params[i] is None else grad_params[i].add_(g)
        return (grad_x, None, None, None, None, grad_w, grad_b, *grad_params)


# ------------------------------------------------------------------------------------------- dropout_attention
def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                      dropout: float) -> torch.Tensor:
    """``dropout(softmax(q k^T / sqrt(d) + mask)) v``: ``F.scaled_dot_product_attention`` with ``dropout_p``.

    q, k, v: (B, heads, T, d); key_mask: (B, 1, 1, T) bool (True: may be attended) or None. Returns (B, heads, T, d).

    Saves: torch's CPU flash kernel has no dropout, and its math fallback keeps three fp32 (B, heads, T, T) tensors
    per layer. On CPU with gradients and dropout, this keeps q, k, v, the output, the rows' log-sum-exp and the
    dropout mask as bool, and recomputes the probabilities in the backward pass (the flash-attention scheme,
    unblocked): BASE, 2 x 8 s, 4 MiB per layer instead of 44 MiB. Exact: the same formula, scores and softmax in
    fp32 whatever the input dtype; the dropout mask comes from the global RNG. Elsewhere (GPU, no dropout, no
    gradient) it is SDPA itself.
    """
    if dropout > 0 and q.device.type == "cpu" and torch.is_grad_enabled():
        return _DropoutAttention.apply(q, k, v, key_mask, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout)


def _attention_probabilities(q, k, key_mask, lse=None):
    """fp32 softmax(q k^T / sqrt(d) + mask) (B, heads, T, T) and the rows' log-sum-exp (given: reused)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q, k.transpose(-2, -1)).to(dtype).mul_(q.shape[-1] ** -0.5)  # (B, heads, T, T)
    if key_mask is not None:
        scores.masked_fill_(~key_mask, float("-inf"))
    if lse is None:
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return scores.sub_(lse).exp_(), lse


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_mask, p):
        probs, lse = _attention_probabilities(q, k, key_mask)
        keep = torch.empty(probs.shape, dtype=torch.bool, device=q.device).bernoulli_(1 - p)  # global RNG
        out = torch.matmul(probs.mul_(keep).mul_(1 / (1 - p)).to(v.dtype), v)
        ctx.p = p
        ctx.save_for_backward(q, k, v, key_mask, lse, out, keep)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_mask, lse, out, keep = ctx.saved_tensors
        scale = 1 / (1 - ctx.p)
        probs, _ = _attention_probabilities(q, k, key_mask, lse)  # P, fp32
        grad_out = grad_out.to(v.dtype)
        grad_v = torch.matmul((probs * keep).mul_(scale).to(v.dtype).transpose(-2, -1), grad_out)
        grad_probs = torch.matmul(grad_out, v.transpose(-2, -1)).to(probs.dtype).mul_(keep).mul_(scale)  # dL/dP
        # softmax backward: dS = P * (dP - sum_j P_j dP_j), and sum_j P_j dP_j = <dO, O> row by row
        row = (grad_out.to(probs.dtype) * out.to(probs.dtype)).sum(-1, keepdim=True)
        grad_scores = probs.mul_(grad_probs.sub_(row)).mul_(q.shape[-1] ** -0.5).to(q.dtype)
        grad_q = torch.matmul(grad_scores, k)
        grad_k = torch.matmul(grad_scores.transpose(-2, -1), q)
        return grad_q, grad_k, grad_v, None, None


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
        return linear(F.dropout(activation(x), dropout, training=dropout > 0.0))
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
