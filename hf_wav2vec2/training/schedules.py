"""Schedules of the paper: the Gumbel temperature (section 2), the pretraining LR (warm-up then linear decay) and
the fine-tuning tri-stage LR (section 4). LR schedules are multipliers of the peak LR for ``LambdaLR``."""

from __future__ import annotations

from ..configuration import W2V2Config

# The length of the paper's BASE pretraining run (section 4.2), for which the Gumbel decay is sized.
PAPER_PRETRAINING_UPDATES = 400_000


def gumbel_temperature(step: int, config: W2V2Config, run_steps: int | None = None) -> float:
    """tau = max(start * decay**(step * s), end): 2 -> 0.5 (BASE) or 0.1 (LARGE) at decay 0.999995 per update.

    ``run_steps`` None: the paper's schedule, s = 1 (BASE reaches its floor after 277k updates, 69% of its 400k).
    ``run_steps`` given: the run-length-proportional form, s = 400k / run_steps, so that tau passes every value at
    the same fraction of the run as in the paper's 400k-update run; a 400k-update run gets exactly the paper's
    values, a 1000-update run reaches the floor at update 693 instead of never.
    """
    exponent = step if run_steps is None else step * (PAPER_PRETRAINING_UPDATES / run_steps)
    return max(config.gumbel_temperature_start * config.gumbel_temperature_decay**exponent,
               config.gumbel_temperature_end)


def polynomial_decay_lr_lambda(warmup_steps: int, total_steps: int, end_factor: float = 0.0, power: float = 1.0):
    """Linear warm-up over ``warmup_steps`` (8% of training in the paper), then polynomial (power 1: linear) decay
    to ``end_factor`` at ``total_steps`` (fairseq ``polynomial_decay``)."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return step / warmup_steps
        remaining = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / remaining, 1.0)
        return end_factor + (1.0 - end_factor) * (1.0 - progress) ** power

    return factor


def tri_stage_lr_lambda(total_steps: int, warmup: float = 0.1, hold: float = 0.4, decay: float = 0.5,
                        init_scale: float = 0.01, final_scale: float = 0.05):
    """Fine-tuning LR (fairseq ``tri_stage``): linear warm-up from ``init_scale`` over the first 10%, hold for 40%,
    exponential decay to ``final_scale`` over the last 50%."""
    if abs(warmup + hold + decay - 1.0) > 1e-6:
        raise ValueError(f"warmup + hold + decay must be 1, got {warmup} + {hold} + {decay}")
    warmup_steps, hold_steps = int(warmup * total_steps), int(hold * total_steps)
    decay_steps = max(total_steps - warmup_steps - hold_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return init_scale + (1.0 - init_scale) * step / warmup_steps
        if step < warmup_steps + hold_steps:
            return 1.0
        progress = min((step - warmup_steps - hold_steps) / decay_steps, 1.0)
        return final_scale**progress  # exp(log(final_scale) * progress)

    return factor
