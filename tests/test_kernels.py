"""The memory-saving kernels of hf_wav2vec2.kernels_* against the plain PyTorch expressions they replace: same outputs,
same gradients for every input and parameter (fp64 gradcheck where the kernel has its own backward)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hf_wav2vec2 import kernels_attention, kernels_conv, kernels_dropout, kernels_fft, kernels_norm, kernels_recompute
from hf_wav2vec2.feature_encoder import ConvLayer


def _grads(outputs, inputs, weights):
    return torch.autograd.grad((outputs * weights).sum(), inputs)


def _conv(conv, x):
    """The oracle: torch's own convolution on a channels-last (B, L, C) tensor."""
    return conv(x.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("in_channels,kernel,stride,length", [(1, 10, 5, 403), (6, 3, 2, 21), (6, 3, 2, 22),
                                                               (12, 2, 2, 17), (7, 4, 3, 30), (40, 4, 3, 31),
                                                               (40, 2, 3, 31)])
@pytest.mark.parametrize("bias", [False, True])
def test_conv1d_channels_last_equals_torch_conv(in_channels, kernel, stride, length, bias):
    """Both CPU paths (windows copied into one matrix for few inputs per frame; above, one matrix product per block
    of ``stride`` taps, a shorter last block, and a kernel shorter than the stride, whose windows leave gaps): output
    and gradients for input, weight and bias equal nn.Conv1d's, with and without gradients; odd lengths."""
    torch.manual_seed(0)
    conv = nn.Conv1d(in_channels, 5, kernel, stride=stride, bias=bias).double()
    x = torch.randn(3, length, in_channels, dtype=torch.float64, requires_grad=True)
    got, ref = kernels_conv.conv1d_channels_last(x, conv), _conv(conv, x)
    assert torch.allclose(got, ref, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(kernels_conv.conv1d_channels_last(x, conv), ref, atol=1e-12)
    params = (x, *conv.parameters())
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-10)
    small = (x[:2, : stride * 3 + kernel].detach().requires_grad_(), *conv.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: kernels_conv._ConvChannelsLast.apply(x, p[0], p[1] if bias else None,
                                                                               stride), small)


@pytest.mark.parametrize("in_channels,kernel,stride", [(1, 10, 5), (32, 3, 2)])
def test_conv1d_channels_last_under_bf16_autocast_is_as_close_as_torch_conv(in_channels, kernel, stride):
    """Under autocast it computes in bf16 (output bf16) and its gradients are as close to fp32 as torch's are."""
    torch.manual_seed(0)
    conv = nn.Conv1d(in_channels, 32, kernel, stride=stride)
    x = torch.randn(4, 401, in_channels, requires_grad=True)
    params = (x, *conv.parameters())
    fp32 = _grads(_conv(conv, x), params, 1.0)
    errors = []
    for ours in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = kernels_conv.conv1d_channels_last(x, conv) if ours else _conv(conv, x)
        assert y.dtype == torch.bfloat16
        errors.append([(a - b).abs().max() / b.abs().max() for a, b in zip(_grads(y.float(), params, 1.0), fp32)])
    for ours, theirs in zip(errors[1], errors[0]):
        assert ours <= 2 * theirs + 1e-3


def test_grad_multiply_scales_the_gradient_only():
    x = torch.randn(3, 5, requires_grad=True)
    y = kernels_recompute.grad_multiply(x, 0.1)
    assert torch.equal(y, x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, torch.full_like(x, 0.1))
    assert kernels_recompute.grad_multiply(x, 1.0) is x
    assert kernels_recompute.grad_multiply(x.detach(), 0.1) is not None


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_group_norm_channels_last_equals_torch_group_norm(padded, chunked, monkeypatch):
    """Oracle: F.group_norm(C groups) on each item's real frames; the padded frames are normalised with those
    statistics. In one time chunk, or in chunks of 3 frames (statistics merged across chunks, one of them all
    padding for the shortest item). Gradients: gradcheck of the one-formula backward. The input is left as it was."""
    monkeypatch.setattr(kernels_norm, "NORM_CHUNK_ELEMENTS", 3 * 3 * 6 if chunked else 1 << 18)
    torch.manual_seed(0)
    weight, bias = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    x = torch.randn(3, 20, 6, dtype=torch.float64) * 3 + 5
    original = x.clone()
    lengths = [20, 13, 7] if padded else [20, 20, 20]
    valid = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None] if padded else None
    got = kernels_norm.group_norm_channels_last(x, weight, bias, 1e-5, valid)
    assert torch.equal(x, original)
    for i, n in enumerate(lengths):
        ref = F.group_norm(x[i : i + 1, :n].transpose(1, 2), 6, weight, bias, 1e-5).transpose(1, 2)
        assert torch.allclose(got[i : i + 1, :n], ref, atol=1e-12)
        mean, var = x[i, :n].mean(0), x[i, :n].var(0, unbiased=False)
        assert torch.allclose(got[i, n:], (x[i, n:] - mean) / (var + 1e-5).sqrt() * weight + bias, atol=1e-12)
    inputs = (x[:, :9].clone().requires_grad_(), weight.requires_grad_(), bias.requires_grad_())
    small_valid = None if valid is None else valid[:, :9]
    assert torch.autograd.gradcheck(lambda *a: kernels_norm._GroupNormChannelsLast.apply(*a, 1e-5, small_valid), inputs)
    assert torch.autograd.gradcheck(lambda *a: kernels_norm.group_norm_channels_last(*a, 1e-5, small_valid), inputs)
    assert torch.equal(x, original)


def test_group_norm_channels_last_computes_in_fp32_for_bf16():
    torch.manual_seed(0)
    x = (torch.randn(2, 50, 4) * 2 + 3).bfloat16().requires_grad_()
    weight, bias = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    y = kernels_norm.group_norm_channels_last(x, weight, bias, 1e-5)
    ref = F.group_norm(x.float().transpose(1, 2), 4, weight, bias, 1e-5).transpose(1, 2)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), ref, atol=2e-2)
    grads = torch.autograd.grad((y.float() * ref.detach()).sum(), (x, weight, bias))
    refs = torch.autograd.grad((ref * ref.detach()).sum(), (x, weight, bias))
    assert grads[0].dtype == torch.bfloat16
    for a, b in zip(grads, refs):
        assert torch.allclose(a.float(), b.float(), atol=5e-2, rtol=2e-2)


def _same_conv(x, weight, bias):
    """The oracle: the positional embedding's convolution as nn.Conv1d computes it, the last frame dropped."""
    kernel, groups = weight.shape[2], x.shape[2] // weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=kernel // 2, groups=groups)
    return y[:, :, : x.shape[1]].transpose(1, 2)


@pytest.mark.parametrize("batch,length,kernel,groups", [(2, 119, 16, 2), (1, 50, 15, 4), (3, 9, 8, 1), (2, 40, 1, 2),
                                                        (1, 500, 128, 16)])
@pytest.mark.parametrize("chunked", [False, True])
def test_conv1d_same_channels_last_fft_equals_torch_conv(batch, length, kernel, groups, chunked, monkeypatch):
    """The FFT path (even and odd kernels, a length within one block, lengths that are no multiple of the block,
    BASE's kernel and groups; all blocks at once, or one block of the batch at a time): output and gradients for
    input, weight and bias equal the convolution's in fp64, and the output to fp32 rounding in fp32."""
    if chunked:
        monkeypatch.setattr(kernels_fft, "_FFT_COLUMNS", 1)
    torch.manual_seed(0)
    channels = 8 * groups
    x = torch.randn(batch, length, channels, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(channels, channels // groups, kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(channels, dtype=torch.float64, requires_grad=True)
    n = kernels_fft._fft_length(kernel)
    if batch * length >= 2 * n:  # the public function takes the FFT path too
        assert torch.equal(kernels_fft.conv1d_same_channels_last(x, weight, bias),
                           kernels_fft._conv_same_fft(x, weight, bias, n))
    got, ref = kernels_fft._conv_same_fft(x, weight, bias, n), _same_conv(x, weight, bias)
    assert torch.allclose(got, ref, atol=1e-10 * ref.abs().max().item())
    params = (x, weight, bias)
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-10 * b.abs().max().item())
    fp32 = kernels_fft._conv_same_fft(x.float(), weight.float(), bias.float(), n)
    assert fp32.dtype == torch.float32
    assert (fp32 - ref).abs().max() <= 1e-6 * ref.abs().max()


def test_conv1d_same_channels_last_short_inputs_are_torch_conv():
    """Fewer than 2n frames in the batch: the convolution itself."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, 20, 32), torch.randn(32, 2, 16), torch.randn(32)
    assert 20 < 2 * kernels_fft._fft_length(16)
    assert torch.equal(kernels_fft.conv1d_same_channels_last(x, weight, bias), _same_conv(x, weight, bias))


def test_conv1d_same_channels_last_under_bf16_autocast_is_as_close_as_torch_conv():
    """Under autocast the FFT path computes in fp32 and rounds its output to bf16: output and gradients at least as
    close to fp32 as the bf16 convolution's."""
    torch.manual_seed(0)
    x = torch.randn(2, 300, 64, requires_grad=True)
    weight, bias = torch.randn(64, 16, 32, requires_grad=True), torch.randn(64, requires_grad=True)
    params = (x, weight, bias)
    ref = _same_conv(x, weight, bias)
    fp32 = _grads(ref, params, 1.0)
    errors = []
    for ours in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = kernels_fft.conv1d_same_channels_last(x, weight, bias) if ours else _same_conv(x, weight, bias)
        assert y.dtype == torch.bfloat16
        grads = _grads(y.float(), params, 1.0)
        errors.append([(y.float() - ref).abs().max() / ref.abs().max(),
                       *[(a - b).abs().max() / b.abs().max() for a, b in zip(grads, fp32)]])
    for ours, theirs in zip(errors[1], errors[0]):
        assert ours <= theirs + 1e-3


@pytest.mark.parametrize("norm", ["group", "layer", None])
@pytest.mark.parametrize("sliced", [False, True])
def test_activate_then_conv_equals_the_plain_graph(norm, sliced, monkeypatch):
    """Output and gradients (input, conv weight and bias, norm parameters) equal conv(activate(x)) (torch's conv, on
    channels-last tensors); with a frame mask for the group norm; over one slice or one item per slice."""
    monkeypatch.setattr(kernels_recompute, "SLICE_ELEMENTS", 1 if sliced else 1 << 22)
    torch.manual_seed(0)
    prev = ConvLayer(4, 6, 3, 2, bias=True, norm=norm, activation="gelu").double()
    if norm is not None:  # away from the initial (1, 0), so that wrong norm gradients would show
        nn.init.normal_(prev.layer_norm.weight)
        nn.init.normal_(prev.layer_norm.bias)
    conv = nn.Conv1d(6, 5, 3, stride=2, bias=True).double()
    x = torch.randn(3, 21, 6, dtype=torch.float64, requires_grad=True)
    valid = torch.arange(21)[None, :] < torch.tensor([21, 15, 9])[:, None] if norm == "group" else None
    params = (x, conv.weight, conv.bias, *prev.norm_parameters())
    got = kernels_recompute.activate_then_conv(x, prev.activate, conv, valid, prev.norm_parameters())
    ref = _conv(conv, prev.activate(x, valid))
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
    from hf_wav2vec2.feature_encoder import FeatureEncoder
    from hf_wav2vec2.frames import frame_mask, num_frames

    monkeypatch.setattr(kernels_recompute, "SLICE_ELEMENTS", 1 if sliced else 1 << 22)
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
    first = _conv(layers[0].conv, audio[:, :, None])
    valid = frame_mask(num_frames(lengths, (10,), (5,)), first.shape[1]) if norm == "group" else None
    ref = layers[0].activate(first, valid)
    for layer in layers[1:]:
        ref = layer.activate(_conv(layer.conv, ref))
    assert torch.allclose(got, ref, atol=1e-12)
    params = list(encoder.parameters())
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_group_norm_equals_conv_then_group_norm(padded, bias, monkeypatch):
    """The first layer's conv + group norm from its windows' statistics: output and gradients (conv weight, norm
    gain and shift; the conv bias, which the norm removes, gets zero) equal the two ops', with and without
    gradients, with padding (statistics over the real frames; one item with a single real frame), in time chunks of
    the backward pass; gradcheck of the formula."""
    monkeypatch.setattr(kernels_norm, "_CONV_NORM_CHUNK_ELEMENTS", 7 * 3 * 6)  # chunks of 7 frames
    torch.manual_seed(0)
    conv = nn.Conv1d(1, 6, 10, stride=5, bias=bias).double()
    norm = nn.GroupNorm(6, 6).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 400, 1, dtype=torch.float64) + 0.7  # an offset: the windows' mean matters
    frames = (400 - 10) // 5 + 1
    valid = torch.arange(frames)[None] < torch.tensor([[frames], [50], [1]]) if padded else None
    got = kernels_norm.conv_group_norm(x, conv, norm, valid)
    ref = kernels_norm.group_norm_channels_last(_conv(conv, x), norm.weight, norm.bias, norm.eps, valid)
    assert torch.allclose(got, ref, atol=1e-11)
    with torch.no_grad():
        assert torch.allclose(kernels_norm.conv_group_norm(x, conv, norm, valid), ref, atol=1e-11)
    params = (*conv.parameters(), *norm.parameters())
    weights = torch.randn_like(ref)
    got_grads = _grads(got, params, weights)
    for a, b in zip(got_grads, _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-9)
    if bias:
        assert torch.equal(got_grads[1], torch.zeros_like(conv.bias))
    small = x[:2, :60]
    assert torch.autograd.gradcheck(
        lambda w, g, b: kernels_norm._ConvGroupNorm.apply(small, w, torch.zeros((), dtype=w.dtype), g, b, 1e-5, None,
                                                          5),
        (conv.weight.detach().requires_grad_(), norm.weight.detach().requires_grad_(),
         norm.bias.detach().requires_grad_()))


@pytest.mark.parametrize("loss", ["projection", "scale"])
def test_conv_group_norm_under_bf16_autocast_is_as_close_as_the_two_ops(loss):
    """bf16 output (its product in fp32, rounded once) and gradients at least as close to fp32 as conv + group norm
    under autocast, for a random projection of the output and for a loss that mostly rescales it (whose gradient
    the norm cancels: a product in bf16 made the weight gradient 6x worse there)."""
    torch.manual_seed(0)
    conv = nn.Conv1d(1, 64, 10, stride=5, bias=False)
    norm = nn.GroupNorm(64, 64)
    x = torch.randn(2, 8000, 1) * 0.1
    params = (conv.weight, norm.weight, norm.bias)
    frames = (8000 - 10) // 5 + 1
    weights = torch.randn(2, frames, 64) if loss == "projection" else None

    def run(fused, autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = kernels_norm.conv_group_norm(x, conv, norm) if fused else \
                kernels_norm.group_norm_channels_last(_conv(conv, x), norm.weight, norm.bias, norm.eps)
        y = y.float()
        objective = (y * weights).sum() if weights is not None else \
            (y * torch.linspace(-1, 1, frames)[None, :, None]).square().sum()
        return y, torch.autograd.grad(objective, params)

    ref_y, ref_grads = run(False, False)
    errors = []
    for fused in (False, True):
        y, grads = run(fused, True)
        errors.append([((y - ref_y).norm() / ref_y.norm()).item()]
                      + [((a - b).norm() / b.norm()).item() for a, b in zip(grads, ref_grads)])
    for ours, plain in zip(errors[1], errors[0]):
        assert ours <= 1.5 * plain + 1e-4


def test_batch_slices_hold_whole_items_up_to_the_slice_size():
    x = torch.zeros(8, 4, 16)
    slice_elements = kernels_recompute.SLICE_ELEMENTS
    slices = kernels_recompute._batch_slices(x, slice_elements // 3)
    assert [(s.start, s.stop) for s in slices] == [(0, 3), (3, 6), (6, 9)]
    assert len(kernels_recompute._batch_slices(x, slice_elements * 2)) == 8  # one item alone exceeds a slice
    assert len(kernels_recompute._batch_slices(x)) == 1


def test_activate_then_conv_gradcheck():
    torch.manual_seed(0)
    prev = ConvLayer(2, 3, 3, 2, bias=False, norm="group", activation="gelu").double()
    conv = nn.Conv1d(3, 2, 2, stride=2, bias=True).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    valid = torch.arange(9)[None, :] < torch.tensor([9, 6])[:, None]

    def fused(x, weight, bias, norm_weight, norm_bias):
        return kernels_recompute._ActivateThenConv.apply(x, valid, prev.activate, conv, None, weight, bias, norm_weight,
                                                         norm_bias)

    assert torch.autograd.gradcheck(fused, (x, conv.weight, conv.bias, *prev.norm_parameters()))


def test_activate_then_conv_under_bf16_autocast_is_as_close_as_the_plain_graph():
    torch.manual_seed(0)
    prev = ConvLayer(4, 8, 3, 2, bias=False, norm="group", activation="gelu")
    conv = nn.Conv1d(8, 8, 3, stride=2, bias=False)
    x = torch.randn(2, 64, 8, requires_grad=True)
    (fp32,) = torch.autograd.grad(_conv(conv, prev.activate(x)).square().sum(), x)
    results = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = kernels_recompute.activate_then_conv(x, prev.activate, conv) if fused else _conv(conv, prev.activate(x))
        results.append(torch.autograd.grad(y.float().square().sum(), x)[0])
    plain_error = (results[0] - fp32).abs().max()
    assert (results[1] - fp32).abs().max() <= 1.5 * plain_error + 1e-6


@pytest.mark.parametrize("saved", [True, False])
def test_dropout_attention_matches_its_formula(monkeypatch, saved):
    """With dropout on CPU the kernel keeps q, k, v, the dropout mask and (when small enough) the probabilities;
    output and gradients equal the formula with the same dropout mask (drawn from the global RNG)."""
    monkeypatch.setattr(kernels_attention, "SAVED_PROBABILITIES_MAX",
                        kernels_attention.SAVED_PROBABILITIES_MAX if saved else 0)
    q, k, v = (torch.randn(2, 2, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    key_mask[1, ..., 5:] = False
    torch.manual_seed(5)
    got = kernels_attention.dropout_attention(q, k, v, key_mask, 0.25)
    torch.manual_seed(5)  # the same draw of the dropout mask
    keep, scale = kernels_dropout.keep_mask((2, 2, 7, 7), 0.25)
    assert 0.6 < keep.double().mean() < 0.9 and scale == 4 / 3  # 0.25 is a multiple of 2^-16: p' = p
    scores = (q @ k.transpose(-2, -1) / 2.0).masked_fill(~key_mask, float("-inf"))
    ref = (scores.softmax(-1) * keep / 0.75) @ v
    assert torch.allclose(got, ref, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert torch.allclose(a, b, atol=1e-12)

    def fixed_mask(q, k, v):
        torch.manual_seed(7)
        return kernels_attention.dropout_attention(q, k, v, key_mask, 0.25)

    small = tuple(t[:1, :1, :5].detach().requires_grad_() for t in (q, k, v))
    key_mask = key_mask[:1, ..., :5]
    assert torch.autograd.gradcheck(fixed_mask, small)


@pytest.mark.parametrize("budget", [1, 2 * 36, 3 * 36])
def test_dropout_attention_chunks_change_nothing(monkeypatch, budget):
    """Chunked over heads (one head; heads within an item; whole items), with the probabilities kept or recomputed,
    output and gradients are bit-identical to the whole (B, heads, T, T) computation with the same dropout mask, in
    bf16 as in training."""
    q, k, v = (torch.randn(2, 3, 6, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    key_mask[1, ..., 4:] = False
    grad = torch.randn(2, 3, 6, 4, dtype=torch.bfloat16)
    results = []
    for elements, saved in ((1 << 30, 1 << 30), (budget, 1 << 30), (budget, 0)):
        monkeypatch.setattr(kernels_attention, "ATTENTION_CHUNK_ELEMENTS", elements)
        monkeypatch.setattr(kernels_attention, "SAVED_PROBABILITIES_MAX", saved)
        torch.manual_seed(3)
        out = kernels_attention.dropout_attention(q, k, v, key_mask, 0.3)
        results.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    assert len(kernels_attention._head_chunks(2, 3, 36)) == {1: 6, 72: 4, 108: 2}[budget]
    for whole, chunked, recomputed in zip(*results):
        assert torch.equal(whole, chunked) and torch.equal(whole, recomputed)


def test_dropout_attention_bf16_is_as_accurate_as_the_plain_graph():
    """In bf16 (scores, probabilities and their gradients in bf16, each softmax and softmax gradient computed in fp32
    and rounded once) the kernel's output and gradients are as close to the fp64 formula, with the same dropout
    mask, as autograd through the same ops in bf16 (what SDPA's math path computes), for BASE's head size 64."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 50, dtype=torch.bool)
    key_mask[1, ..., 37:] = False
    grad = torch.randn(2, 3, 50, 64, dtype=torch.bfloat16)
    torch.manual_seed(4)
    keep, scale = kernels_dropout.keep_mask((2, 3, 50, 50), 0.1)

    def formula(q, k, v):
        scores = (q @ k.transpose(-2, -1) * 0.125).masked_fill(~key_mask, float("-inf"))
        return (scores.softmax(-1) * keep * scale).to(q.dtype) @ v

    def errors(out, inputs):
        return [((a.double() - b).norm() / b.norm()).item()
                for a, b in zip((out, *torch.autograd.grad(out, inputs, grad.to(out.dtype))), reference)]

    exact = tuple(t.detach().double().requires_grad_() for t in (q, k, v))
    out = formula(*exact)
    reference = (out.detach(), *torch.autograd.grad(out, exact, grad.double()))
    plain = errors(formula(q, k, v), (q, k, v))
    torch.manual_seed(4)
    ours = errors(kernels_attention.dropout_attention(q, k, v, key_mask, 0.1), (q, k, v))
    assert all(e < 2e-2 for e in plain)
    for mine, theirs in zip(ours, plain):
        assert mine <= 1.1 * theirs


def test_dropout_attention_without_dropout_is_sdpa():
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    key_mask = torch.tensor([True] * 6 + [True] * 4 + [False] * 2).view(2, 1, 1, 6)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    assert torch.equal(kernels_attention.dropout_attention(q, k, v, key_mask, 0.0), ref)


def test_activate_then_linear_equals_the_plain_graph():
    torch.manual_seed(0)
    linear = nn.Linear(8, 3).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    got = kernels_recompute.activate_then_linear(x, F.gelu, linear)
    ref = linear(F.gelu(x))
    assert torch.allclose(got, ref, atol=1e-12)
    params = (x, linear.weight, linear.bias)
    weights = torch.randn_like(ref)
    for a, b in zip(_grads(got, params, weights), _grads(ref, params, weights)):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, w, b: kernels_recompute._ActivateThenLinear.apply(x, F.gelu, w, b),
                                    (x[:1, :2], linear.weight, linear.bias))


def test_activate_then_linear_with_dropout_is_the_plain_expression():
    linear = nn.Linear(8, 3)
    x = torch.randn(4, 8, requires_grad=True)
    torch.manual_seed(3)
    got = kernels_recompute.activate_then_linear(x, F.gelu, linear, dropout=0.5)
    torch.manual_seed(3)
    assert torch.equal(got, linear(kernels_dropout.dropout(F.gelu(x), 0.5, training=True)))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.65])
def test_keep_mask_drops_with_probability_p_in_every_lane(p):
    """Each 64-bit draw gives four 16-bit uniforms: the drop rate is p' = round(p * 2^16) / 2^16 overall and at every
    position modulo 4, within 5 standard deviations."""
    torch.manual_seed(0)
    n = 4 * 300_000
    keep, scale = kernels_dropout.keep_mask((n,), p)
    p_used = round(p * 65536) / 65536
    assert abs(p_used - p) <= 2**-17 and scale == pytest.approx(1 / (1 - p_used), rel=1e-12)
    sigma = (p_used * (1 - p_used) / (n // 4)) ** 0.5
    for lane in range(4):
        assert abs((~keep[lane::4]).double().mean().item() - p_used) < 5 * sigma
    torch.manual_seed(0)
    assert torch.equal(kernels_dropout.keep_mask((n,), p)[0], keep)  # the global RNG decides


def test_keep_mask_edges():
    assert kernels_dropout.keep_mask((5, 3), 0.0)[0].all()
    keep, scale = kernels_dropout.keep_mask((5, 3), 1.0)
    assert not keep.any() and scale == 0.0
    assert kernels_dropout.keep_mask((7,), 1 - 2**-20)[0].sum() == 0  # rounds to 1: nothing kept, no division by zero


def test_dropout_is_mask_times_scale_forward_and_backward():
    x = torch.randn(4, 9, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    y = kernels_dropout.dropout(x, 0.3)
    torch.manual_seed(3)
    keep, scale = kernels_dropout.keep_mask(x.shape, 0.3)
    assert torch.equal(y, x * keep * scale)
    grad = torch.randn_like(y)
    assert torch.equal(torch.autograd.grad(y, x, grad)[0], grad * keep * scale)
    assert kernels_dropout.dropout(x, 0.3, training=False) is x
    module = kernels_dropout.Dropout(0.3).eval()
    assert module(x) is x
    ones = torch.ones(1_000_000)
    assert kernels_dropout.dropout(ones, 0.1).mean().item() == pytest.approx(1.0, abs=2e-3)  # expectation kept
