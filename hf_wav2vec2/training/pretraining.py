"""One pretraining update, the validation pass and the checkpoint folders, shared by ``train_pretrain.py`` and the
tests.

Normalisation happens here, once: the losses the model returns are sums over masked frames; after the backward of
every micro-batch of an update, gradients are multiplied by ``world_size / n`` where ``n`` is the masked-frame count
summed over all micro-batches and processes (DDP has averaged them over processes), exactly fairseq's
``multiply_grads(world_size / sample_size)``. So N processes with batch b equal one process with batch N*b.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass, field

import torch

from ..configuration import SAMPLING_RATE
from .schedules import gumbel_temperature


@dataclass
class PretrainingState:
    """What the loop needs to continue as if never stopped; saved with every Accelerate checkpoint."""

    step: int = 0  # optimizer updates done
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    skipped_updates: int = 0  # updates dropped for a non-finite loss or gradient
    seen_audio_s: float = 0.0
    history: list = field(default_factory=list)  # (step, loss) of every update, for the resume test and plots

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def mask_generator(device: torch.device, seed: int, step: int, micro_batch: int, process: int) -> torch.Generator:
    """Masks and negatives of an update come from a generator seeded by (seed, step, micro-batch, process): a
    resumed run draws the same ones without saving any generator state."""
    return torch.Generator(device=device).manual_seed(hash((seed, step, micro_batch, process)) % (2**63))


def pretraining_update(accelerator, model, optimizer, scheduler, batches, state: PretrainingState, *,
                       seed: int = 0, max_grad_norm: float | None = None) -> dict:
    """Forward/backward every micro-batch of ``batches`` (None entries: a batch whose audio was all unusable), then
    one normalised optimizer step. Returns metrics averaged over processes, per masked frame."""
    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config
    unwrapped.set_gumbel_temperature(gumbel_temperature(state.step, config))
    params = [p for p in model.parameters() if p.requires_grad]
    device = accelerator.device
    keys = ("loss", "contrastive_loss", "diversity_loss", "feature_penalty", "num_masked", "correct",
            "prob_perplexity", "code_perplexity", "frames", "audio_s", "micro_batches")
    sums = dict.fromkeys(keys, 0.0)

    # 1. forward + backward of each micro-batch; DDP syncs gradients on the last one only
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            if batch is None:
                # Nothing usable in this batch: a zero loss still joins the gradient all-reduce of the others.
                accelerator.backward(sum(p.sum() for p in params) * 0.0)
                continue
            generator = mask_generator(device, seed, state.step, i, accelerator.process_index)
            with accelerator.autocast():
                out = model(**batch, generator=generator)
            accelerator.backward(out.loss)
        n = out.num_masked.item()
        sums["loss"] += out.loss.item()
        sums["contrastive_loss"] += out.contrastive_loss_sum.item()
        sums["diversity_loss"] += out.diversity_loss_sum.item()
        sums["feature_penalty"] += out.feature_penalty_sum.item()
        sums["num_masked"] += n
        sums["correct"] += out.accuracy.item() * n
        sums["prob_perplexity"] += out.prob_perplexity.item()
        sums["code_perplexity"] += out.code_perplexity.item()
        sums["frames"] += out.mask_time_indices.numel()
        sums["audio_s"] += batch["attention_mask"].sum().item() / SAMPLING_RATE
        sums["micro_batches"] += 1

    # 2. gather the sums of all processes; normalise the gradient by the global masked count
    totals = accelerator.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device), "sum")
    totals = dict(zip(keys, totals.tolist()))
    n_total = max(totals["num_masked"], 1.0)
    scale = accelerator.num_processes / n_total
    for p in params:
        if p.grad is not None:
            p.grad.mul_(scale)

    # 3. clip, then step unless the loss or the gradient is not finite (skipped and counted, never fatal)
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    grad_norm = float(grad_norm)
    finite = math.isfinite(totals["loss"]) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        finite = not accelerator.optimizer_step_was_skipped  # fp16 overflow
    if not finite:
        state.skipped_updates += 1
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
        "masked_fraction": totals["num_masked"] / max(totals["frames"], 1.0),
        "temperature": unwrapped.quantizer.temperature,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        "audio_s": totals["audio_s"],
        "skipped_updates": state.skipped_updates,
    }
    state.step += 1
    state.seen_audio_s += totals["audio_s"]
    state.history.append((state.step, metrics["loss"]))
    return metrics


@torch.no_grad()
def validate(accelerator, model, dataloader, *, seed: int = 0) -> dict:
    """Contrastive loss and accuracy per masked frame on a dev set, with masks drawn from a fixed seed."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(dataloader):
        if batch is None:
            continue
        generator = mask_generator(accelerator.device, seed, -1, i, accelerator.process_index)
        with accelerator.autocast():
            out = model(**batch, generator=generator)
        n = out.num_masked.double()
        sums += torch.stack([out.contrastive_loss_sum.double(), out.accuracy.double() * n, n])
    sums = accelerator.reduce(sums, "sum")
    model.train()
    n = max(sums[2].item(), 1.0)
    return {"val_contrastive_loss": sums[0].item() / n, "val_accuracy": sums[1].item() / n}


# ------------------------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(folder: str) -> str | None:
    """The newest complete checkpoint: only fully written ones are renamed to checkpoint-<step>."""
    if not os.path.isdir(folder):
        return None
    steps = [int(n.split("-")[1]) for n in os.listdir(folder) if n.startswith("checkpoint-") and n[11:].isdigit()]
    return os.path.join(folder, f"checkpoint-{max(steps)}") if steps else None


def save_checkpoint(accelerator, folder: str, step: int, keep: int) -> None:
    """Write to a temporary folder, then rename: a run killed while saving leaves the previous checkpoint usable."""
    final = os.path.join(folder, f"checkpoint-{step}")
    partial = os.path.join(folder, f"partial-{step}")
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(partial, final)
        done = sorted((int(n.split("-")[1]) for n in os.listdir(folder) if n.startswith("checkpoint-")), reverse=True)
        for old in done[keep:]:
            shutil.rmtree(os.path.join(folder, f"checkpoint-{old}"), ignore_errors=True)
    accelerator.wait_for_everyone()
