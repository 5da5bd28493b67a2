"""The memory-saving kernels of hf_wav2vec2.ops against the plain PyTorch expressions they replace: same outputs,
same gradients for every input and parameter (fp64 gradcheck where the kernel has its own backward)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hf_wav2vec2 import ops
from hf_wav2vec2.feature_encoder import ConvLayer


def _grads(outputs, inputs, weights):
    return torch.autograd.grad((outputs * weights).sum(), inputs)


def test_grad_multiply_scales_the_gradient_only():
    x = torch.randn(3, 5, requires_grad=True)
    y = ops.grad_multiply(x, 0.1)
    assert torch.equal(y, x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, torch.full_like(x, 0.1))
    assert ops.grad_multiply(x, 1.0) is x
    assert ops.grad_multiply(x.detach(), 0.1) is not None


@pytest.mark.parametrize("norm", ["group", "layer", None])
@pytest.mark.parametrize("sliced", [False, True])
def test_activate_then_conv_equals_the_plain_graph(norm, sliced, monkeypatch):
    """Output and gradients (input, conv weight and bias, norm parameters) equal conv(activate(x)); with a frame mask
    for the group norm; over one slice or one item per slice."""
    monkeypatch.setattr(ops, "SLICE_ELEMENTS", 1 if sliced else 1 << 22)
    torch.manual_seed(0)
    prev = ConvLayer(4, 6, 3, 2, bias=True, norm=norm, activation="gelu").double()
    if norm is not None:  # away from the initial (1, 0), so that wrong norm gradients would show
        nn.init.normal_(prev.layer_norm.weight)
        nn.init.normal_(prev.layer_norm.bias)
    conv = nn.Conv1d(6, 5, 3, stride=2, bias=True).double()
    x = torch.randn(3, 6, 21, dtype=torch.float64, requires_grad=True)
    valid = torch.arange(21)[None, :] < torch.tensor([21, 15, 9])[:, None] if norm == "group" else None
    params = (x, conv.weight, conv.bias, *prev.norm_parameters())
    got = ops.activate_then_conv(x, prev.activate, conv, valid, prev.norm_parameters())
    ref = conv(prev.activate(x, valid))
    assert torch.allclose(got, ref, atol=1e-12)
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("sliced", [False, True])
def test_feature_encoder_recomputing_its_first_layer_equals_the_plain_stack(norm, sliced, monkeypatch):
    """With gradients the feature encoder keeps only the audio for its first layer and recomputes that layer in the
    backward pass; output and every parameter's gradient equal the plain layer-by-layer stack, with padding."""
    from hf_wav2vec2 import W2V2Config
    from hf_wav2vec2.feature_encoder import FeatureEncoder, frame_mask, num_frames

    monkeypatch.setattr(ops, "SLICE_ELEMENTS", 1 if sliced else 1 << 22)
    torch.manual_seed(0)
    config = W2V2Config(conv_dim=(6, 5, 4), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), conv_bias=True,
                        feat_extract_norm=norm, feature_grad_mult=1.0)
    encoder = FeatureEncoder(config).double()
    for layer in encoder.conv_layers:
        if layer.norm is not None:
            nn.init.normal_(layer.layer_norm.weight)
            nn.init.normal_(layer.layer_norm.bias)
    audio = torch.randn(3, 400, dtype=torch.float64)
    lengths = torch.tensor([400, 300, 170])
    got = encoder(audio, lengths)

    layers = encoder.conv_layers
    first = layers[0].conv(audio[:, None, :])
    valid = frame_mask(num_frames(lengths, (10,), (5,)), first.shape[-1]) if norm == "group" else None
    ref = layers[0].activate(first, valid)
    for layer in layers[1:]:
        ref = layer.activate(layer.conv(ref))
    assert torch.allclose(got, ref, atol=1e-12)
    params = list(encoder.parameters())
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-10)


def test_slices_keep_every_thread_busy_where_cpu_low_precision_convolution_has_no_onednn_kernel():
    """Without oneDNN bf16/fp16 kernels (a CPU without those instructions) torch's fallback convolution parallelises
    over the batch only: slices then hold at least one item per thread. fp32, or a CPU with the kernels: one item."""
    x = torch.zeros(8, 4, 16)
    big = ops.SLICE_ELEMENTS * 2  # elements per item of the activated output: one item alone exceeds a slice
    assert ops._min_slice_items("cpu", (False, torch.bfloat16)) == 1
    assert ops._min_slice_items("cuda", (True, torch.bfloat16)) == 1
    for dtype, supported in ((torch.bfloat16, torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                             (torch.float16, torch.ops.mkldnn._is_mkldnn_fp16_supported())):
        expected = 1 if supported and torch.backends.mkldnn.is_available() else torch.get_num_threads()
        assert ops._min_slice_items("cpu", (True, dtype)) == expected
    slices = ops._batch_slices(x, big, min_items=3)
    assert [s.stop - s.start for s in slices] == [3, 3, 3] and slices[-1].start == 6
    assert len(ops._batch_slices(x, big)) == 8


def test_activate_then_conv_gradcheck():
    torch.manual_seed(0)
    prev = ConvLayer(2, 3, 3, 2, bias=False, norm="group", activation="gelu").double()
    conv = nn.Conv1d(3, 2, 2, stride=2, bias=True).double()
    x = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    valid = torch.arange(9)[None, :] < torch.tensor([9, 6])[:, None]

    def fused(x, weight, bias, norm_weight, norm_bias):
        return ops._ActivateThenConv.apply(x, valid, prev.activate, conv, None, weight, bias, norm_weight, norm_bias)

    assert torch.autograd.gradcheck(fused, (x, conv.weight, conv.bias, *prev.norm_parameters()))


def test_activate_then_conv_under_bf16_autocast_is_as_close_as_the_plain_graph():
    torch.manual_seed(0)
    prev = ConvLayer(4, 8, 3, 2, bias=False, norm="group", activation="gelu")
    conv = nn.Conv1d(8, 8, 3, stride=2, bias=False)
    x = torch.randn(2, 8, 64, requires_grad=True)
    (fp32,) = torch.autograd.grad(conv(prev.activate(x)).square().sum(), x)
    results = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ops.activate_then_conv(x, prev.activate, conv) if fused else conv(prev.activate(x))
        results.append(torch.autograd.grad(y.float().square().sum(), x)[0])
    plain_error = (results[0] - fp32).abs().max()
    assert (results[1] - fp32).abs().max() <= 1.5 * plain_error + 1e-6


def test_dropout_attention_matches_its_formula():
    """With dropout on CPU the kernel keeps q, k, v and a bool mask; output and gradients equal the formula with the
    same dropout mask (drawn from the global RNG)."""
    q, k, v = (torch.randn(2, 2, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    key_mask[1, ..., 5:] = False
    torch.manual_seed(5)
    got = ops.dropout_attention(q, k, v, key_mask, 0.25)
    torch.manual_seed(5)  # the same draw of the dropout mask
    keep = torch.empty(2, 2, 7, 7, dtype=torch.bool).bernoulli_(0.75)
    assert 0.6 < keep.double().mean() < 0.9
    scores = (q @ k.transpose(-2, -1) / 2.0).masked_fill(~key_mask, float("-inf"))
    ref = (scores.softmax(-1) * keep / 0.75) @ v
    assert torch.allclose(got, ref, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert torch.allclose(a, b, atol=1e-12)

    def fixed_mask(q, k, v):
        torch.manual_seed(7)
        return ops.dropout_attention(q, k, v, key_mask, 0.25)

    small = tuple(t[:1, :1, :5].detach().requires_grad_() for t in (q, k, v))
    key_mask = key_mask[:1, ..., :5]
    assert torch.autograd.gradcheck(fixed_mask, small)


def test_dropout_attention_without_dropout_is_sdpa():
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    key_mask = torch.tensor([True] * 6 + [True] * 4 + [False] * 2).view(2, 1, 1, 6)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    assert torch.equal(ops.dropout_attention(q, k, v, key_mask, 0.0), ref)


def test_activate_then_linear_equals_the_plain_graph():
    torch.manual_seed(0)
    linear = nn.Linear(8, 3).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    got = ops.activate_then_linear(x, F.gelu, linear)
    ref = linear(F.gelu(x))
    assert torch.allclose(got, ref, atol=1e-12)
    params = (x, linear.weight, linear.bias)
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w, b: ops._ActivateThenLinear.apply(x, F.gelu, w, b),
                                    (x[:1, :2], linear.weight, linear.bias))


def test_activate_then_linear_with_dropout_is_the_plain_expression():
    linear = nn.Linear(8, 3)
    x = torch.randn(4, 8, requires_grad=True)
    torch.manual_seed(3)
    got = ops.activate_then_linear(x, F.gelu, linear, dropout=0.5)
    torch.manual_seed(3)
    assert torch.equal(got, linear(F.dropout(F.gelu(x), 0.5, training=True)))
