"""One pretraining update, the validation pass and the checkpoint folders, shared by ``train_pretrain.py`` and the
tests.

Normalisation happens here, once, before any backward (fairseq divides the loss by the sample size): the masks of
every micro-batch of an update are drawn first, their masked-frame count ``n`` is summed over micro-batches and
processes, and each micro-batch backpropagates ``loss_sum * world_size / n`` (DDP then averages over processes). The
gradient is that of the loss per masked frame of the whole update, and under fp16 the scaled loss stays in range
whatever the batch size. Masks, negatives and Gumbel noise of a micro-batch come from a generator keyed by its
global index in the update (:func:`mask_generator`), so N processes with batch b equal one process with N
micro-batches of b (``--gradient_accumulation_steps N``), and a resumed run draws what the unbroken one drew.

Under fp16 (``accelerator.scaler``) an overflowing update is skipped by the GradScaler itself, which also halves its
scale; without a scaler (fp32, bf16) an update with a non-finite loss or gradient norm is skipped here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import torch

from ..configuration import SAMPLING_RATE
from .checkpoints import disk_full_error, is_disk_full, latest_checkpoint, prune_checkpoints
from .schedules import gumbel_temperature
from .skips import SkipCounts

logger = logging.getLogger("hf_wav2vec2.training")


@dataclass
class PretrainingState(SkipCounts):
    """What the loop needs to continue as if never stopped; saved as JSON (``training_state.json``) in every
    checkpoint, beside Accelerate's model, optimizer, LR-schedule and RNG files. The Gumbel temperature is a function
    of ``step`` (:func:`gumbel_temperature`), masks, negatives and Gumbel noise of ``(seed, step)``
    (:func:`mask_generator`); the fp16 loss scale is in Accelerate's files. The skip counters are those of
    :class:`~hf_wav2vec2.training.skips.SkipCounts`."""

    step: int = 0  # updates done, skipped non-finite ones included (they use their slot of max_steps and the LR)
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    seen_audio_s: float = 0.0
    run_id: str = ""  # lineage: a resumed run keeps it; pruning only deletes checkpoints that carry it
    history: list = field(default_factory=list)  # [step, loss] of every update, for the resume test and plots

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"unknown training state field(s) {sorted(unknown)}")
        self.__dict__.update(state)


def mask_generator(device: torch.device, seed: int, step: int, micro_batch: int) -> torch.Generator:
    """Masks, negatives and Gumbel noise of a micro-batch come from a generator seeded by (seed, step, micro_batch),
    where ``micro_batch`` is the global index within the update, ``index_on_process * num_processes +
    process_index`` (Accelerate's sharded sampler gives process p the batches p, p + N, ...): one process
    accumulating N micro-batches and N processes draw the same, and a resumed run draws the same without saving any
    generator state."""
    return torch.Generator(device=device).manual_seed(hash((seed, step, micro_batch)) % (2**63))


def pretraining_update(accelerator, model, optimizer, scheduler, batches, state: PretrainingState, *,
                       seed: int = 0, max_grad_norm: float | None = None,
                       max_consecutive_skips: int | None = None, gumbel_run_steps: int | None = None) -> dict | None:
    """Forward/backward every micro-batch of ``batches`` (None entries: a batch whose audio was all unusable), then
    one optimizer step. Returns metrics averaged over processes, per masked frame. ``scheduler`` must step once per
    call: prepare it with ``Accelerator(step_scheduler_with_optimizer=False)`` (Accelerate otherwise steps it once
    per process, and not at all after an fp16 overflow).

    Two kinds of update are skipped, never applied: one whose loss or gradient is not finite (no optimizer step:
    weights and Adam moments untouched; it still takes its slot of ``max_steps`` and its LR-schedule step, so the
    run's length and schedule do not depend on faults; counted in ``state.skipped_updates``), and one without any
    usable audio on any process (nothing happens at all: returns None, counted in ``state.empty_updates``, the caller
    draws the next batches). Under fp16 the GradScaler decides the first kind: the step always goes through the
    scaler, which skips an update with inf/NaN gradients and halves its scale (calling neither ``step`` nor
    ``update`` would leave it "unscaled" and the next update would fail). After ``max_consecutive_skips`` of either
    kind in a row, :class:`TrainingStopped` is raised: the checkpoints written so far hold the last good weights.

    The Gumbel temperature follows the paper's schedule, or with ``gumbel_run_steps`` its run-length-proportional
    form (:func:`gumbel_temperature`)."""
    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config
    unwrapped.set_gumbel_temperature(gumbel_temperature(state.step, config, gumbel_run_steps))
    params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device
    scaler = accelerator.scaler
    _check_scheduler(accelerator, scheduler)

    # 1. the masks of every micro-batch first: normalising before backward needs the update's global masked count
    generators, local = [], [0.0, 0.0]  # masked frames, usable micro-batches
    batches = list(batches)
    for i, batch in enumerate(batches):
        if batch is None:
            generators.append(None)
            continue
        generator = mask_generator(device, seed, state.step, i * accelerator.num_processes + accelerator.process_index)
        if batch.get("mask_time_indices") is None:
            mask = unwrapped.sample_mask(batch["input_values"], batch.get("attention_mask"), generator)
            batches[i] = batch = {**batch, "mask_time_indices": mask}
        generators.append(generator)
        local[0] += float(batch["mask_time_indices"].sum())
        local[1] += 1
    counts = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=device), "sum").tolist()
    if counts[1] == 0:  # no usable audio anywhere: not an update
        optimizer.zero_grad(set_to_none=True)
        state.empty(state.step + 1)  # not counted in ``step``
        state.check(max_consecutive_skips, state.step)
        return None
    n_total = max(counts[0], 1.0)
    # DDP averages gradients over processes: world_size / n makes the result the gradient of sum(loss) / n.
    loss_scale = accelerator.num_processes / n_total

    # 2. forward + backward of each micro-batch of the normalised loss; DDP syncs gradients on the last one only
    keys = ("loss", "contrastive_loss", "diversity_loss", "feature_penalty", "correct", "prob_perplexity",
            "code_perplexity", "frames", "audio_s", "micro_batches")
    sums = dict.fromkeys(keys, 0.0)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            if batch is None:
                # Nothing usable in this batch: a zero loss still joins the gradient all-reduce of the others.
                accelerator.backward(sum(p.sum() for p in params) * 0.0)
                continue
            with accelerator.autocast():
                out = model(**batch, generator=generators[i])
            accelerator.backward(out.loss * loss_scale)
        sums["loss"] += out.loss.item()
        sums["contrastive_loss"] += out.contrastive_loss_sum.item()
        sums["diversity_loss"] += out.diversity_loss_sum.item()
        sums["feature_penalty"] += out.feature_penalty_sum.item()
        sums["correct"] += out.accuracy.item() * out.num_masked.item()
        sums["prob_perplexity"] += out.prob_perplexity.item()
        sums["code_perplexity"] += out.code_perplexity.item()
        sums["frames"] += out.mask_time_indices.numel()
        sums["audio_s"] += batch["attention_mask"].sum().item() / SAMPLING_RATE
        sums["micro_batches"] += 1
    totals = accelerator.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device), "sum")
    totals = dict(zip(keys, totals.tolist()))

    # 3. clip (unscaling fp16 gradients first), then step unless the loss or the gradient is not finite
    grad_norm = float(accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf")))
    if scaler is not None:
        # The scaler found any inf/NaN gradient while unscaling; its step skips such an update and its update()
        # backs the scale off. Both must run after every unscale_, so the step is never skipped here. Whether it
        # skipped is read off the scale (halved only on an overflow): Accelerate's optimizer_step_was_skipped
        # misses a fused optimizer's skip, which happens inside the kernel that the scaler hands its inf check to.
        scale = scaler.get_scale()
        optimizer.step()
        applied = scaler.get_scale() >= scale
    else:
        applied = math.isfinite(totals["loss"]) and math.isfinite(grad_norm)
        if applied:
            optimizer.step()
    if applied:
        state.applied()
    else:
        state.non_finite(state.step + 1, f"loss {totals['loss'] / n_total}, gradient norm {grad_norm}"
                         + (f", fp16 loss scale now {scaler.get_scale()}" if scaler is not None else ""))
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)

    micro = max(totals["micro_batches"], 1.0)
    metrics = {
        "loss": totals["loss"] / n_total,
        "contrastive_loss": totals["contrastive_loss"] / n_total,
        "diversity_loss": totals["diversity_loss"] / n_total,
        "feature_penalty": totals["feature_penalty"] / n_total,
        "accuracy": totals["correct"] / n_total,
        "prob_perplexity": totals["prob_perplexity"] / micro,
        "code_perplexity": totals["code_perplexity"] / micro,
        "masked_fraction": counts[0] / max(totals["frames"], 1.0),
        "temperature": unwrapped.quantizer.temperature,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        "audio_s": totals["audio_s"],
        "skipped_updates": state.skipped_updates,
        "empty_updates": state.empty_updates,
    }
    if scaler is not None:
        metrics["loss_scale"] = float(scaler.get_scale())
    state.step += 1
    state.seen_audio_s += totals["audio_s"]
    state.history.append([state.step, metrics["loss"]])
    state.check(max_consecutive_skips, state.step)
    return metrics


def _check_scheduler(accelerator, scheduler) -> None:
    """Accelerate's prepared scheduler, when linked to the optimizer, steps once per process and skips the step of
    an fp16 overflow: the LR of update k would then depend on the process count and on overflows."""
    linked = getattr(scheduler, "step_with_optimizer", False) and not getattr(scheduler, "split_batches", False)
    if linked and (accelerator.num_processes > 1 or accelerator.scaler is not None):
        raise ValueError("the LR scheduler was prepared by an Accelerator(step_scheduler_with_optimizer=True): it "
                         "would step once per process, and not after an fp16 overflow; create the Accelerator with "
                         "step_scheduler_with_optimizer=False (pretraining_update steps it once per update)")


def validate(accelerator, model, dataloader, *, seed: int = 0) -> dict:
    """Contrastive loss and accuracy per masked frame on a dev set, with masks drawn from a fixed seed."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(dataloader):
        if batch is None:
            continue
        generator = mask_generator(accelerator.device, seed, -1, i * accelerator.num_processes +
                                   accelerator.process_index)
        with accelerator.autocast():
            out = model(**batch, generator=generator)
        n = out.num_masked.double()
        sums += torch.stack([out.contrastive_loss_sum.double(), out.accuracy.double() * n, n])
    sums = accelerator.reduce(sums, "sum")
    model.train()
    n = max(sums[2].item(), 1.0)
    return {"val_contrastive_loss": sums[0].item() / n, "val_accuracy": sums[1].item() / n}


# ------------------------------------------------------------------------------------------------ checkpoints
STATE_FILE = "training_state.json"  # written last: a checkpoint folder without it is incomplete


def new_run_id() -> str:
    return uuid.uuid4().hex


def save_checkpoint(accelerator, folder: str, state: PretrainingState, keep: int) -> str:
    """Write ``folder/checkpoint-<step>``: Accelerate's model (safetensors), optimizer, LR-schedule and RNG files
    plus ``training_state.json``, first into ``partial-<step>``, then renamed, so a run killed while saving leaves
    the previous checkpoint as the latest. Then delete this run's checkpoints beyond the newest ``keep`` (other
    lineages are never touched). A full disk raises ``OSError(ENOSPC)`` naming the folder, with the partial folder
    removed and the last complete checkpoint intact."""
    final = os.path.join(folder, f"checkpoint-{state.step}")
    partial = os.path.join(folder, f"partial-{state.step}")
    if accelerator.is_main_process:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(partial):
            shutil.rmtree(partial)  # our own unfinished save of this update (a run killed while saving)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(partial)
        if accelerator.is_main_process:
            with open(os.path.join(partial, STATE_FILE + ".tmp"), "w") as handle:
                json.dump({**state.state_dict(), "saved_at": time.time()}, handle)
            os.replace(os.path.join(partial, STATE_FILE + ".tmp"), os.path.join(partial, STATE_FILE))
    except (OSError, RuntimeError) as error:
        if not is_disk_full(error):
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise disk_full_error(final, error, latest_checkpoint(folder, STATE_FILE)) from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):  # cannot happen after check_output_dir; never overwrite work, keep it aside
            aside = f"{final}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(final, aside)
            logger.warning("%s existed: moved to %s", final, aside)
        os.replace(partial, final)
        prune_checkpoints(folder, keep, state.run_id, STATE_FILE)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str, state: PretrainingState) -> None:
    """Restore a :func:`save_checkpoint` folder. Nothing in it is unpickled as code: the training state is JSON,
    Accelerate loads model (safetensors), optimizer, LR schedule and RNG states with ``torch.load(weights_only=True)``.
    """
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_file):
        old = os.path.isfile(os.path.join(path, "custom_checkpoint_0.pkl"))
        raise ValueError(f"{path}: no {STATE_FILE}" + (
            " (written by an older version, whose training state is a pickle; it is not loaded because unpickling "
            "can run code)" if old else " (an incomplete checkpoint)"))
    with open(state_file) as handle:
        saved = json.load(handle)
    saved.pop("saved_at", None)
    state.load_state_dict(saved)
    accelerator.load_state(path)
