"""fp16 and bf16 in the pretraining update: an fp16 overflow is skipped by the GradScaler (which halves its scale and
keeps working), bf16 and fp32 skip non-finite updates themselves; the loss is normalised before backward.

Accelerate 1.15 gives no GradScaler on CPU (``Accelerator(cpu=True, mixed_precision="fp16")`` leaves
``accelerator.scaler`` None and autocast off), so the fp16 tests inject torch's CPU GradScaler and turn autocast on,
which is exactly what Accelerate sets up on a GPU (``scaler`` + ``native_amp``)."""

import copy

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import tiny_config

from hf_wav2vec2 import W2V2ForPreTraining
from hf_wav2vec2.training import adamw
from hf_wav2vec2.training.pretraining import PretrainingState, mask_generator, pretraining_update

INIT_SCALE = 2.0**12


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    # Accelerate's state is a process-wide singleton that refuses another mixed_precision once set.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _setup(mixed_precision="no", scaler=False, optimizer="adamw"):
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)
    if scaler:
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)  # backoff 0.5, growth after 2000
        accelerator.native_amp = True  # fp16 autocast, and unscale_ before clipping
    torch.manual_seed(0)
    model = W2V2ForPreTraining(tiny_config())
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    elif optimizer == "fused":  # train_pretrain.py's
        optimizer = adamw(model, 1e-3, (0.9, 0.999), 1e-8, 0.01)
        assert optimizer.defaults["fused"]
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return accelerator, model, optimizer, scheduler


def _batch(samples=4000, seed=1):
    audio = torch.randn(2, samples, generator=torch.Generator().manual_seed(seed))
    return {"input_values": audio, "attention_mask": torch.ones_like(audio, dtype=torch.long)}


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _adam_steps(optimizer):
    return {int(s["step"]) for s in optimizer.optimizer.state.values()}


@pytest.mark.parametrize("optimizer_kind", ["adamw", "fused"])
def test_fp16_overflow_is_skipped_by_the_grad_scaler_which_halves_its_scale_and_goes_on(optimizer_kind):
    # "fused": the scaler hands the fused kernel its inf check instead of skipping optimizer.step() itself
    accelerator, model, optimizer, scheduler = _setup("fp16", scaler=True, optimizer=optimizer_kind)
    scaler, state = accelerator.scaler, PretrainingState()
    inf_gradient, nan_output = [], []
    # an fp16 overflow: one parameter's gradient becomes inf (the loss stays finite)
    model.project_q.weight.register_hook(lambda g: g * float("inf") if inf_gradient else g)
    # a non-finite forward: loss and every gradient NaN
    model.project_hid.register_forward_hook(lambda m, i, output: output * float("nan") if nan_output else None)
    batches = [_batch(seed=1)]

    def update():
        return pretraining_update(accelerator, model, optimizer, scheduler, batches, state, max_grad_norm=10.0)

    metrics = update()
    assert metrics["loss_scale"] == INIT_SCALE and state.skipped_updates == 0 and _adam_steps(optimizer) == {1}
    expected_scale = INIT_SCALE
    for poison in (inf_gradient, nan_output):
        # an overflowing update: skipped by the scaler, weights and Adam untouched, scale halved
        before = _weights(model)
        poison.append(True)
        skipped_before = state.skipped_updates
        metrics = update()  # the update after an overflow once raised "unscale_() has already been called"
        poison.clear()
        expected_scale /= 2
        assert scaler.get_scale() == metrics["loss_scale"] == expected_scale
        assert state.skipped_updates == skipped_before + 1 and state.consecutive_skips == 1
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        assert all(torch.isfinite(p).all() for p in model.parameters())
        steps = _adam_steps(optimizer)
        # training goes on: the next finite update is applied at the lower scale
        metrics = update()
        assert state.consecutive_skips == 0 and scaler.get_scale() == expected_scale
        assert _adam_steps(optimizer) == {steps.pop() + 1}
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
        assert all(torch.isfinite(p).all() for p in model.parameters()) and metrics["grad_norm"] < float("inf")
    assert state.step == 5 and state.skipped_updates == 2
    assert scheduler.scheduler.last_epoch == 5  # skipped updates keep their LR step


def test_loss_is_normalised_by_the_update_masked_count_before_backward():
    """The gradient of an update of two micro-batches is that of (loss_1 + loss_2) / (n_1 + n_2), and what goes
    into backward is already divided (so an fp16 scaler never sees the summed loss)."""
    accelerator, model, optimizer, scheduler = _setup(optimizer="sgd")
    batches = [_batch(4000, seed=1), _batch(3200, seed=2)]  # different lengths: different masked counts
    # oracle: the model's own mask sampling (forward without mask_time_indices) from the same generators
    reference = copy.deepcopy(accelerator.unwrap_model(model))
    outs = [reference(**b, generator=mask_generator(torch.device("cpu"), 0, 0, i)) for i, b in enumerate(batches)]
    assert outs[0].num_masked != outs[1].num_masked
    n = sum(o.num_masked for o in outs)
    ((outs[0].loss + outs[1].loss) / n).backward()
    expected = {name: p.detach() - 0.1 * p.grad for name, p in reference.named_parameters()}

    backpropagated = []
    original_backward = accelerator.backward
    accelerator.backward = lambda loss, **kw: (backpropagated.append(loss.item()), original_backward(loss, **kw))
    state = PretrainingState()
    metrics = pretraining_update(accelerator, model, optimizer, scheduler, batches, state)
    assert metrics["loss"] == pytest.approx(((outs[0].loss + outs[1].loss) / n).item(), rel=1e-6)
    assert sum(backpropagated) == pytest.approx(metrics["loss"], rel=1e-6)  # per masked frame, not a sum
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_has_no_scaler_and_skips_non_finite_updates_itself():
    accelerator, model, optimizer, scheduler = _setup("bf16")
    assert accelerator.scaler is None
    nan_output = [True]
    model.project_hid.register_forward_hook(lambda m, i, output: output * float("nan") if nan_output else None)
    state, before = PretrainingState(), _weights(model)
    metrics = pretraining_update(accelerator, model, optimizer, scheduler, [_batch()], state)
    assert state.skipped_updates == 1 and "loss_scale" not in metrics and not optimizer.optimizer.state
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    nan_output.clear()
    pretraining_update(accelerator, model, optimizer, scheduler, [_batch()], state)
    assert state.consecutive_skips == 0 and _adam_steps(optimizer) == {1}


def test_a_scheduler_stepped_by_accelerate_is_refused_under_fp16():
    accelerator = Accelerator(cpu=True)  # step_scheduler_with_optimizer=True: steps per process, not after overflow
    accelerator.scaler = torch.amp.GradScaler("cpu")
    model = W2V2ForPreTraining(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    with pytest.raises(ValueError, match="step_scheduler_with_optimizer=False"):
        pretraining_update(accelerator, model, optimizer, scheduler, [_batch()], PretrainingState())


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about(monkeypatch):
    from hf_wav2vec2.training import precision

    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: False)
    warning = precision.emulated_bf16_warning("cpu", True)
    assert warning is not None and "AVX512-BF16" in warning and "fp32" in warning
    assert precision.emulated_bf16_warning("cpu", False) is None
    assert precision.emulated_bf16_warning("cuda", True) is None
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: True)
    assert precision.emulated_bf16_warning("cpu", True) is None
