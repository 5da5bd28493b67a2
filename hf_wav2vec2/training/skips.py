"""The skip-and-stop guard of both training loops: updates that must not be applied are counted, logged and, when
nothing but skips happens for too long, stop the run.

Two kinds: an *empty* update (no usable audio in any of its batches: every file unreadable or too short) and a
*skipped* one (a non-finite loss or gradient). Neither changes the weights or Adam's moments. Pretraining
(:class:`~hf_wav2vec2.training.pretraining.PretrainingState`) and fine-tuning
(:class:`~hf_wav2vec2.training.finetune.SkipGuard`) keep these counters in their checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """Too many consecutive updates were skipped (non-finite loss or gradient, or no usable audio)."""


@dataclass
class SkipCounts:
    skipped_updates: int = 0  # updates dropped for a non-finite loss or gradient
    empty_updates: int = 0  # updates whose batches held no usable audio
    consecutive_skips: int = 0  # skipped or empty updates since the last applied one

    def applied(self) -> None:
        self.consecutive_skips = 0

    def empty(self, update: int) -> None:
        self.empty_updates += 1
        self.consecutive_skips += 1
        logger.warning("update %d: no usable audio in its batches, skipped (%d such updates so far)", update,
                       self.empty_updates)

    def non_finite(self, update: int, what: str, *, toward_limit: bool = True) -> None:
        """``what`` says which value was not finite. ``toward_limit`` False: counted, but not toward
        ``max_consecutive_skips`` (an fp16 scaler calibrating its scale)."""
        self.skipped_updates += 1
        if toward_limit:
            self.consecutive_skips += 1
        logger.warning("update %d skipped: %s (%d skipped so far)", update, what, self.skipped_updates)

    def check(self, limit: int | None, update: int, checkpoints: str = "The checkpoints written so far") -> None:
        """Raise :class:`TrainingStopped` when ``limit`` updates in a row were skipped or empty."""
        if limit is not None and self.consecutive_skips >= limit:
            raise TrainingStopped(
                f"{self.consecutive_skips} consecutive updates skipped at update {update} ({self.skipped_updates} "
                f"non-finite, {self.empty_updates} without usable audio in all): stopping. {checkpoints} hold "
                "the last good weights; lower the learning rate, check the data, or raise --max_consecutive_skips")
