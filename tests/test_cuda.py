"""CUDA: bf16 and fp16 pretraining updates, a CTC step, parity with transformers, the memory-saving kernels.

Every test here needs a GPU and skips without one (CI has none). ``HF_W2V2_TEST_DEVICE=cpu`` runs the same tests on
the CPU, which checks the tests themselves (fp16 then has no gradient scaler: Accelerate leaves it to CUDA).
"""

import os

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import tiny_config, tiny_hf_config
from transformers import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining, kernels_attention, kernels_recompute
from hf_wav2vec2.feature_encoder import ConvLayer
from hf_wav2vec2.training import adamw
from hf_wav2vec2.training.pretraining import PretrainingState, pretraining_update

DEVICE = os.environ.get("HF_W2V2_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    # Accelerate's state is a process-wide singleton that refuses another mixed_precision once set.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _audio(batch=2, samples=8000):
    return torch.randn(batch, samples, device=DEVICE)


def _pretraining_run(mixed_precision: str, updates: int = 4) -> tuple[list[dict], Accelerator, torch.nn.Module]:
    accelerator = Accelerator(cpu=DEVICE == "cpu", mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)
    model = W2V2ForPreTraining(tiny_config(hidden_dropout=0.1, attention_dropout=0.1, layerdrop=0.1))
    optimizer = adamw(model, 5e-4, (0.9, 0.98), 1e-6, 0.01)  # train_pretrain.py's: fused, with the fp16 scaler
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    state, metrics = PretrainingState(), []
    for _ in range(updates):
        batches = [{"input_values": _audio(), "attention_mask": torch.ones(2, 8000, dtype=torch.long, device=DEVICE)}
                   for _ in range(2)]
        metrics.append(pretraining_update(accelerator, model, optimizer, scheduler, batches, state, max_grad_norm=10.0))
    return metrics, accelerator, accelerator.unwrap_model(model)


@pytest.mark.parametrize("mixed_precision", ["bf16", "fp16"])
def test_pretraining_updates_are_finite_and_applied(mixed_precision):
    metrics, accelerator, model = _pretraining_run(mixed_precision)
    if mixed_precision == "fp16" and DEVICE == "cuda":
        assert accelerator.scaler is not None
        assert all("loss_scale" in m for m in metrics)
    for m in metrics:
        assert torch.isfinite(torch.tensor([m["loss"], m["grad_norm"]])).all(), m
    # fp16: the scaler may skip its first updates while it finds its scale, never all of them
    assert metrics[-1]["skipped_updates"] < len(metrics)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ctc_training_step_is_finite(dtype):
    model = W2V2ForCTC(tiny_config(ctc_loss_reduction="sum", ctc_zero_infinity=True, mask_time_prob=0.3)).to(DEVICE)
    model.train()
    labels = torch.tensor([[3, 4, 5, -100], [6, 7, 8, 9]], device=DEVICE)
    with torch.autocast(DEVICE, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(_audio(), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _load_ours(cls, hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "official")
    return cls.from_pretrained(tmp_path / "official").to(DEVICE)


@pytest.mark.parametrize("variant", ["group_postln", "layer_preln"])
def test_parity_with_transformers(variant, tmp_path):
    """fp32 on the device: CTC logits in eval, and every CTC gradient in train mode without noise (TF32 off: both
    implementations then compute in fp32)."""
    no_noise = dict(mask_time_prob=0.0, feature_grad_mult=1.0, ctc_zero_infinity=True)
    hf = Wav2Vec2ForCTC(tiny_hf_config(variant, **no_noise))
    ours = _load_ours(W2V2ForCTC, hf, tmp_path)
    hf = hf.to(DEVICE)
    x, labels = _audio(samples=4000), torch.tensor([[3, 4, 5, -100, -100], [6, 7, 8, 9, 10]], device=DEVICE)
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            assert (ours.eval()(x).logits - hf.eval()(x).logits).abs().max() <= 1e-4
        hf.train()(x, labels=labels).loss.backward()
        ours.train()(x, labels=labels).loss.backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        if theirs[name].grad is None:
            continue
        # atol relative to the largest gradient: on CPU (HF_W2V2_TEST_DEVICE=cpu) our convolutions are matrix
        # products, summed in another fp32 order than torch's (tests/test_parity.py checks that against fp64)
        ref = theirs[name].grad
        torch.testing.assert_close(p.grad, ref, atol=2e-5 * max(1.0, ref.abs().max().item()), rtol=1e-4, msg=name)


def test_pretraining_contrastive_loss_matches_transformers(tmp_path):
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    hf = Wav2Vec2ForPreTraining(tiny_hf_config("group_postln"))
    ours = _load_ours(W2V2ForPreTraining, hf, tmp_path).eval()
    hf = hf.to(DEVICE).eval()
    x = _audio()
    t = int(ours.num_frames(x.shape[1]))
    mask = _compute_mask_indices((2, t), mask_prob=0.65, mask_length=4, min_masks=2)
    negatives = torch.tensor(_sample_negative_indices((2, t), num_negatives=10, mask_time_indices=mask), device=DEVICE)
    mask = torch.tensor(mask, device=DEVICE)
    with torch.no_grad():
        ref = hf(x, mask_time_indices=mask, sampled_negative_indices=negatives)
        got = ours(x, mask_time_indices=mask,
                   sampled_negative_indices=negatives - (torch.arange(2, device=DEVICE) * t)[:, None, None])
    torch.testing.assert_close(got.contrastive_loss_sum, ref.contrastive_loss, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_memory_saving_kernels_equal_their_plain_expressions(dtype):
    """activate_then_conv, activate_then_linear and dropout_attention (SDPA on CUDA) against the plain graph: same
    output and gradients under autocast, on the device."""
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    autocast = torch.autocast(DEVICE, dtype=dtype, enabled=dtype != torch.float32)
    prev = ConvLayer(8, 16, 3, 2, bias=False, norm="group", activation="gelu").to(DEVICE)
    conv = torch.nn.Conv1d(16, 8, 3, stride=2).to(DEVICE)
    x = torch.randn(3, 101, 16, device=DEVICE, requires_grad=True)  # the previous conv layer's output, channels-last
    valid = torch.arange(101, device=DEVICE)[None, :] < torch.tensor([101, 80, 50], device=DEVICE)[:, None]
    params = (x, conv.weight, conv.bias, *prev.norm_parameters())
    results = []
    for fused in (True, False):
        with autocast:
            y = kernels_recompute.activate_then_conv(x, prev.activate, conv, valid, prev.norm_parameters()) if fused \
                else conv(prev.activate(x, valid).transpose(1, 2)).transpose(1, 2)
        results.append((y.float(), torch.autograd.grad(y.float().square().sum(), params)))
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, **tol)

    linear = torch.nn.Linear(32, 16).to(DEVICE)
    h = torch.randn(2, 7, 32, device=DEVICE, requires_grad=True)
    results = []
    for fused in (True, False):
        with autocast:
            y = kernels_recompute.activate_then_linear(h, torch.nn.functional.gelu, linear) if fused \
                else linear(torch.nn.functional.gelu(h))
        results.append((y.float(), torch.autograd.grad(y.float().square().sum(), (h, linear.weight, linear.bias))))
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, **tol)

    q, k, v = (torch.randn(2, 2, 9, 8, device=DEVICE, requires_grad=True) for _ in range(3))
    key_mask = (torch.arange(9, device=DEVICE) < torch.tensor([9, 6], device=DEVICE)[:, None])[:, None, None, :]
    with autocast:
        got = kernels_attention.dropout_attention(q, k, v, key_mask, 0.0)
        ref = torch.softmax((q @ k.transpose(-2, -1)).float() / 8 ** 0.5 + torch.where(key_mask, 0.0, float("-inf")),
                            -1).to(v.dtype) @ v
    torch.testing.assert_close(got.float(), ref.float(), **tol)
