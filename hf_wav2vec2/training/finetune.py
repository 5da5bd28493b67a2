"""CTC fine-tuning with the transformers ``Trainer``, as in the paper (section 4) and fairseq's recipes.

* :class:`FreezeFinetuneCallback`: the conv feature encoder never trains; for the first
  ``config.freeze_finetune_updates`` updates only the CTC projection ``lm_head`` trains, then the whole network
  except the feature encoder (fairseq ``freeze_finetune_updates`` with ``feature_grad_mult=0``).
* :class:`CTCTrainer`: adds that callback, the tri-stage LR schedule (10% warm-up from 0.01x, 40% hold, 50%
  exponential decay to 0.05x), batches by total audio (``MaxTokensBatchSampler``), and fairseq's loss
  normalisation: the summed CTC loss divided by the number of utterances of the whole update, gathered over
  gradient-accumulation steps and processes (fairseq ``sentence_avg: true`` in every fine-tuning recipe).
  Adam's betas (0.9, 0.98) and eps 1e-8 are ``TrainingArguments`` fields (``adam_beta2``, ``adam_epsilon``).
  A batch without a usable example (the collator returns None) becomes a zero-loss placeholder
  (:class:`PlaceholderForEmptyBatch`), so that every process of a distributed run still runs the step.
* :class:`SkipGuard`: an update whose loss or gradient is not finite, or whose batches were all placeholders, is
  skipped (no optimizer step: weights and Adam moments untouched), logged and counted; too many in a row stop the
  run with :class:`TrainingStopped`. The Trainer still counts a skipped update in ``global_step`` and steps the LR
  schedule (its data position on resume is ``global_step`` updates of batches), as pretraining does for non-finite
  updates.
* Evaluation: each batch is greedy-decoded where it is computed and summed into edit counts
  (:func:`edit_counts`, :data:`SUMMARY_FIELDS`); :func:`summary_metrics` turns the gathered sums into the split's
  WER, CER and loss, equal on any number of processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence

import jiwer
import numpy as np
import torch
from torch.nn.utils import get_total_norm
from torch.utils.data import DataLoader, Dataset
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from ..data.batching import MaxTokensBatchSampler
from ..decoding import greedy_decode
from ..feature_cache import FeatureCache
from ..hub import PushCodeFilesCallback
from .checkpoints import disk_full_error, is_disk_full, latest_checkpoint
from .schedules import tri_stage_lr_lambda
from .skips import SkipCounts

logger = logging.getLogger("hf_wav2vec2.training")


# -------------------------------------------------------------------------------------------------- freezing
def set_finetune_stage(model, frozen: bool) -> None:
    """``frozen``: only ``lm_head`` trains. Otherwise everything but the conv feature encoder trains. The feature
    encoder is frozen in both stages."""
    base = model.wav2vec2
    for p in base.parameters():
        p.requires_grad = not frozen
    model.freeze_feature_encoder()
    for p in model.lm_head.parameters():
        p.requires_grad = True


class FreezeFinetuneCallback(TrainerCallback):
    """fairseq's ``freeze_finetune_updates`` for the ``Trainer``; N is read from ``model.config``.

    Updates ``0 .. N-1`` train ``lm_head`` only; from update N on, everything but the conv feature encoder, which
    is frozen as soon as the Trainer is built, so the optimizer never holds it. The stage is set before every
    update from ``state.global_step``, so a resumed run lands in the right one. The optimizer holds the base
    parameters from the start: during the frozen stage they get no gradient, so Adam leaves them (and their
    moments) untouched, and distributed runs need ``ddp_find_unused_parameters=True`` (``train_ctc.py`` sets it).
    """

    def __init__(self, freeze_finetune_updates: int | None = None):
        self.freeze_finetune_updates = freeze_finetune_updates
        self._frozen: bool | None = None

    def _updates(self, model) -> int:
        if self.freeze_finetune_updates is not None:
            return self.freeze_finetune_updates
        return int(getattr(model.config, "freeze_finetune_updates", 0) or 0)

    def on_init_end(self, args, state, control, model=None, **kwargs):
        model.freeze_feature_encoder()  # before the optimizer is built: it never holds the conv encoder

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._frozen = None
        self._apply(model, state.global_step)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        set_finetune_stage(model, frozen=False)  # leave a model that trains as a whole, whatever the step

    def _apply(self, model, step: int) -> None:
        frozen = step < self._updates(model)
        if frozen != self._frozen:
            set_finetune_stage(model, frozen)
            if frozen:
                logger.info("updates %d..%d: training lm_head only (freeze_finetune_updates)", step,
                            self._updates(model) - 1)
            else:
                logger.info("update %d: training the whole network except the conv feature encoder", step)
            self._frozen = frozen


# ------------------------------------------------------------------------------------------ non-finite guard
MIN_LOSS_SCALE = 1e-4  # fairseq's min_loss_scale: fp16 overflows below this scale are the model's, not the scale's


class SkipGuard(TrainerCallback, ExportableState):
    """Skips the optimizer step of an update that must not be applied, counts it, and stops a run that only skips.

    :meth:`CTCTrainer.training_step` reports each micro-batch (finite loss? a real batch or a placeholder?); just
    before the optimizer step this callback checks those and the gradients, agreed over all processes:

    * no real batch in the whole update (every file unusable): an *empty* update;
    * a non-finite loss or gradient: a *skipped* update.

    Either way the gradients are set to None, so Adam steps no parameter and leaves its moments untouched; under
    fp16 the gradient scaler, which recorded the overflow when the Trainer unscaled the gradients, also halves its
    scale. ``max_consecutive_skips`` skipped or empty updates in a row raise :class:`TrainingStopped` out of
    ``Trainer.train``: the checkpoints hold the last good weights and the script writes no final model. An fp16
    overflow (non-finite gradient from a finite loss) is counted as skipped, but toward that limit only once the
    loss scale is below ``MIN_LOSS_SCALE``: before, it is the scaler finding its scale. The counters are saved in
    ``trainer_state.json`` and restored on resume.
    """

    def __init__(self, max_consecutive_skips: int | None = 10):
        self.max_consecutive_skips = max_consecutive_skips
        self.counts = SkipCounts()
        self._real_batches, self._finite_loss = 0, True
        self.trainer = None  # set by CTCTrainer

    @property
    def skipped_updates(self) -> int:
        return self.counts.skipped_updates

    @property
    def empty_updates(self) -> int:
        return self.counts.empty_updates

    @property
    def consecutive_skips(self) -> int:
        return self.counts.consecutive_skips

    def state(self) -> dict:
        return {"args": {"max_consecutive_skips": self.max_consecutive_skips},
                "attributes": dict(self.counts.__dict__)}

    def record(self, real_batch: bool, loss: torch.Tensor) -> None:
        self._real_batches += int(real_batch)
        self._finite_loss &= bool(torch.isfinite(loss.detach()).all())

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, dict) and "attributes" in saved:  # a resumed run
            self.counts = SkipCounts(**saved["attributes"])

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # the largest |gradient| over all parameters in one fused pass: inf or NaN exactly where some gradient is
        finite_grad = not grads or bool(torch.isfinite(get_total_norm(grads, norm_type=float("inf"))))
        flags = torch.tensor([self._real_batches, int(not self._finite_loss), int(not finite_grad)],
                             dtype=torch.float64, device=trainer.args.device)
        if trainer.accelerator.num_processes > 1:
            flags = trainer.accelerator.reduce(flags, "sum")
        real, bad_loss, bad_grad = flags.tolist()
        self._real_batches, self._finite_loss = 0, True
        update = state.global_step + 1
        if real > 0 and not bad_loss and not bad_grad:
            self.counts.applied()
            return
        scaler = trainer.accelerator.scaler
        # fp16: a non-finite gradient from a finite loss is the scaler's overflow, which it backs off from.
        overflow = scaler is not None and real > 0 and not bad_loss
        if real == 0:
            self.counts.empty(update)
        else:
            # The scaler's first overflows only calibrate it; they count toward the limit once its scale is below
            # fairseq's min_loss_scale (1e-4), where the model rather than the scale overflows.
            self.counts.non_finite(
                update, ("non-finite loss" if bad_loss else "non-finite gradient")
                + (f" (fp16 overflow at loss scale {scaler.get_scale():g})" if overflow else ""),
                toward_limit=not overflow or scaler.get_scale() < MIN_LOSS_SCALE)
        # The Trainer has unscaled the gradients before this callback (its gradient norm goes through
        # accelerator.clip_grad_norm_), so a scaler already holds its own inf check: with no gradients it still
        # skips (and backs off from) an overflow, never unscales again, and steps no parameter.
        for p in model.parameters():
            p.grad = None
        self.counts.check(self.max_consecutive_skips, update, f"The checkpoints in {args.output_dir}")


# --------------------------------------------------------------------------------------------------- metrics
# Per evaluation batch, what the WER, CER and loss of a split are sums of: one row per batch and process, the same
# shape on every process, so that the Trainer's gather never meets batches of different sizes (batches built by
# total audio hold different numbers of utterances and frames on each process) and memory does not grow with the
# split (no logits or ids are kept).
SUMMARY_FIELDS = ("loss_sum", "utterances", "word_errors", "words", "char_errors", "chars")


def edit_counts(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int, int, int]:
    """(word edits, reference words, character edits, reference characters) of the minimum alignments, summed over
    the pairs: what the corpus WER and CER of ``hf_wav2vec2.metrics`` divide (jiwer's alignments, the same cleaning
    of spaces), so that sums over batches and processes give exactly the corpus figures."""
    if not references:
        return 0, 0, 0, 0
    words = jiwer.process_words(list(references), list(hypotheses))
    clean = [" ".join(text.split()) for text in references], [" ".join(text.split()) for text in hypotheses]
    chars = jiwer.process_characters(*clean)
    return (words.substitutions + words.deletions + words.insertions,
            words.substitutions + words.deletions + words.hits,
            chars.substitutions + chars.deletions + chars.insertions,
            chars.substitutions + chars.deletions + chars.hits)


def summary_metrics(prediction: EvalPrediction) -> dict:
    """``compute_metrics`` of :class:`CTCTrainer`: the loss per utterance, WER and CER of the whole split from the
    per-batch rows of :data:`SUMMARY_FIELDS` gathered from every process."""
    rows = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, len(SUMMARY_FIELDS))
    totals = dict(zip(SUMMARY_FIELDS, rows.sum(0)))

    def ratio(errors: float, total: float) -> float:  # as the metrics: errors without a reference count as 1
        return errors / total if total else float(errors > 0)

    return {"loss": ratio(totals["loss_sum"], totals["utterances"]),
            "wer": ratio(totals["word_errors"], totals["words"]), "cer": ratio(totals["char_errors"], totals["chars"])}


# --------------------------------------------------------------------------------------------------- trainer
class CTCTrainer(Trainer):
    """``Trainer`` with the paper's fine-tuning recipe for ``W2V2ForCTC`` (see the module docstring).

    Args (besides the Trainer's):
        max_tokens: audio samples per device and batch (fairseq ``max_tokens``); batches are built by
            ``MaxTokensBatchSampler`` over the dataset's lengths (``dataset.hf_dataset["num_samples"]`` for an
            ``AudioDataset``, or a ``num_samples`` column), their count a multiple of the process count (no
            utterance repeated by accelerate's sharding), reshuffled each epoch (:class:`EpochToSampler`). None: the
            Trainer's batches of ``per_device_train_batch_size``.
        lr_phase_ratios, init_lr_scale, final_lr_scale: the tri-stage schedule (fairseq ``phase_ratio``,
            ``init_lr_scale``, ``final_lr_scale``); ``args.lr_scheduler_type`` and warm-up fields are not used.
        freeze_finetune_updates: override ``model.config.freeze_finetune_updates``.
        max_consecutive_skips: stop after this many skipped updates in a row (:class:`SkipGuard`); None: never.
        feature_cache: a :class:`~hf_wav2vec2.feature_cache.FeatureCache` for the frozen encoder's frames, looked up
            by the ids of a collator with ``return_ids=True``; None: the encoder runs on every batch.
        batch_record: a debugging record of the data order (:class:`BatchRecord`, with ``max_tokens``): each process
            appends the utterance ids of every training batch it collates to ``<batch_record>.<process index>``.

    The model must use ``ctc_loss_reduction="sum"``: the trainer normalises by the utterance count itself. The data
    collator is wrapped in :class:`PlaceholderForEmptyBatch`: a None batch becomes a zero-loss placeholder.
    Evaluation needs ``processing_class`` (the processor: its tokenizer decodes) and reports ``loss`` (per
    utterance), ``wer`` and ``cer`` of the whole split (:func:`summary_metrics`).
    """

    loss_is_scaled_for_ga = True  # compute_loss divides by the utterances of the whole update

    def __init__(self, *args, max_tokens: int | None = None, lr_phase_ratios=(0.1, 0.4, 0.5),
                 init_lr_scale: float = 0.01, final_lr_scale: float = 0.05,
                 freeze_finetune_updates: int | None = None, max_consecutive_skips: int | None = 10,
                 feature_cache: FeatureCache | None = None, batch_record: str | None = None, **kwargs):
        self.max_tokens = max_tokens
        self.feature_cache = feature_cache
        self.batch_record = batch_record
        self.lr_phase_ratios = tuple(lr_phase_ratios)
        self.init_lr_scale = init_lr_scale
        self.final_lr_scale = final_lr_scale
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, FreezeFinetuneCallback) for c in callbacks):
            callbacks.append(FreezeFinetuneCallback(freeze_finetune_updates))
        if not any(isinstance(c, PushCodeFilesCallback) for c in callbacks):
            callbacks.append(PushCodeFilesCallback())  # intermediate Hub pushes carry the code auto_map names
        self.skip_guard = SkipGuard(max_consecutive_skips)
        callbacks.append(self.skip_guard)
        if kwargs.get("compute_metrics") is not None or kwargs.get("preprocess_logits_for_metrics") is not None:
            raise ValueError("CTCTrainer computes the split's WER, CER and loss itself (summary_metrics), from edit "
                             "counts summed on each process; leave compute_metrics and preprocess_logits_for_metrics "
                             "out")
        super().__init__(*args, callbacks=callbacks, compute_metrics=summary_metrics, **kwargs)
        self.skip_guard.trainer = self
        reduction = self.model.config.ctc_loss_reduction
        if reduction != "sum":
            raise ValueError(f"CTCTrainer normalises the summed CTC loss by the utterance count (fairseq "
                             f"sentence_avg); load the model with ctc_loss_reduction='sum', got {reduction!r}")
        # every dataloader (train, eval, max_tokens or the Trainer's own) collates through self.data_collator
        self.data_collator = PlaceholderForEmptyBatch(self.data_collator, self.model.config.receptive_field)

    # 1. tri-stage LR (section 4)
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            warmup, hold, decay = self.lr_phase_ratios
            schedule = tri_stage_lr_lambda(num_training_steps, warmup, hold, decay, init_scale=self.init_lr_scale,
                                           final_scale=self.final_lr_scale)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # 2. loss: summed CTC / utterances in the update (fairseq sentence_avg)
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Utterances with at least one label in this update's micro-batches, summed over processes."""
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        count = sum(int((batch["labels"] >= 0).any(-1).sum()) for batch in batch_samples)
        count = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        # the frozen encoder's frames of utterances met before (a collator with return_ids=True names them)
        ids, num_samples = inputs.pop("ids", None), inputs.pop("num_samples", None)
        if self.feature_cache is not None and ids is not None:
            encoder = self.accelerator.unwrap_model(model).wav2vec2.feature_extractor
            inputs["conv_features"] = self.feature_cache(encoder, inputs["input_values"], ids, num_samples)
        outputs = model(**inputs)
        has_labels = (labels >= 0).any(-1)  # (B,) False only in the placeholder batch (PlaceholderForEmptyBatch)
        if num_items_in_batch is None or not model.training:  # evaluation: this batch alone, on this process
            num_items_in_batch = has_labels.sum()
        loss = outputs.loss / torch.as_tensor(num_items_in_batch, device=outputs.loss.device).clamp_min(1)
        if model.training and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the divisor was global
        if not bool(has_labels.any()):
            loss = loss * 0.0  # a placeholder: nothing to learn, but every process still runs its backward
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.skip_guard.record(bool((inputs["labels"] >= 0).any()), loss)
        return loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # training logs carry the skip counters
            logs = {**logs, "skipped_updates": self.skip_guard.skipped_updates,
                    "empty_updates": self.skip_guard.empty_updates}
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint; a full disk raises an error naming the folder, and the incomplete checkpoint
        (which would otherwise look like the latest) is removed. ``trainer_state.json`` is written last: a folder
        without it is incomplete, and ``latest_checkpoint`` never picks it."""
        folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as error:
            if not is_disk_full(error):
                raise
            if self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            raise disk_full_error(folder, error, latest_checkpoint(self.args.output_dir, "trainer_state.json")) \
                from error

    # 3. evaluation: each batch greedy-decoded on its process (frames past an utterance's end ignored), one row of
    # edit counts returned as both predictions and labels; the Trainer gathers the rows, summary_metrics sums them
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, outputs, labels = super().prediction_step(model, inputs, False, ignore_keys)
        # The Trainer returns every non-loss field of W2V2CTCOutput, in order: logits (B, T, V), frame_lengths (B,).
        logits, frame_lengths = outputs[:2]
        has_labels = (labels >= 0).any(-1)  # (B,) False only in a placeholder batch
        tokenizer = self.processing_class.tokenizer
        hypotheses = greedy_decode(logits.argmax(-1)[has_labels], tokenizer, frame_lengths[has_labels])
        rows = labels[has_labels]
        references = tokenizer.batch_decode(rows.masked_fill(rows < 0, tokenizer.pad_token_id).tolist(),
                                            group_tokens=False)  # "LL" in labels is two letters
        utterances = len(references)
        summary = torch.tensor([[float(loss) * utterances, utterances, *edit_counts(references, hypotheses)]],
                               dtype=torch.float64, device=logits.device)  # (1, 6)
        return None, summary, summary

    # 4. batches by total audio (fairseq max_tokens)
    def get_train_dataloader(self) -> DataLoader:
        if self.max_tokens is None:
            return super().get_train_dataloader()
        # An utterance over max_tokens cannot be cropped (its transcript would no longer match): skipped, logged.
        # The batch count is made a multiple of the process count: accelerate's sharding would otherwise pad the
        # epoch's last round with its first batches again, training those utterances twice.
        sampler = MaxTokensBatchSampler(_lengths(self.train_dataset), self.max_tokens, shuffle=True,
                                        seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                                        too_long="skip", names=_names(self.train_dataset), advice=_ADVICE,
                                        num_batches_multiple=self.accelerator.num_processes)
        if len(sampler) == 0:
            raise ValueError(f"no training utterance fits max_tokens={self.max_tokens} samples ({_ADVICE})")
        collate = self.data_collator
        if self.batch_record is not None:
            collate = BatchRecord(collate, sampler, f"{self.batch_record}.{self.args.process_index}")
        return self._audio_dataloader(EpochToSampler(self.train_dataset, sampler), sampler, collate)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("CTCTrainer: evaluation requires an eval_dataset")
        if self.max_tokens is None and self.accelerator.num_processes == 1:
            return super().get_eval_dataloader(eval_dataset)  # one process: nothing is repeated
        # As many batches per process, no utterance repeated (a repeat would count twice in the WER): by total audio,
        # or of per_device_eval_batch_size utterances without max_tokens.
        max_tokens, max_batch = self.max_tokens, None
        if max_tokens is None:
            max_tokens, max_batch = sys.maxsize, self.args.per_device_eval_batch_size
        sampler = MaxTokensBatchSampler(_lengths(dataset), max_tokens, shuffle=False, too_long="alone",
                                        names=_names(dataset), max_batch_size=max_batch,
                                        num_batches_multiple=self.accelerator.num_processes)
        return self._audio_dataloader(dataset, sampler, self.data_collator)

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self.get_eval_dataloader(test_dataset)

    def _audio_dataloader(self, dataset, sampler, collate) -> DataLoader:
        # Our collator gets the rows as they are: the Trainer's column removal would drop "text" and "path".
        num_workers = self.args.dataloader_num_workers
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=self.args.dataloader_persistent_workers and num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if num_workers > 0 else None,
        )
        return self.accelerator.prepare(loader)


class PlaceholderForEmptyBatch:
    """The data collator, with a placeholder in place of the None it returns for a batch without a usable example.

    The Trainer cannot skip a batch: in a distributed run every process must run each step, or the others wait for
    it. The placeholder is one silent utterance of ``num_samples`` (the model's receptive field: exactly one frame)
    without labels, ``{"input_values": (1, L) float32, "attention_mask": (1, L) long, "labels": (1, 1) -100}``;
    :meth:`CTCTrainer.compute_loss` gives it zero loss.
    """

    def __init__(self, collator: Callable, num_samples: int):
        self.collator = collator
        self.num_samples = num_samples

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        batch = self.collator(examples)
        if batch is not None:
            return batch
        return {"input_values": torch.zeros(1, self.num_samples, dtype=torch.float32),
                "attention_mask": torch.ones(1, self.num_samples, dtype=torch.long),
                "labels": torch.full((1, 1), -100, dtype=torch.long)}


class EpochToSampler(Dataset):
    """The training dataset as the DataLoader holds it, passing ``set_epoch`` on to the batch sampler.

    The Trainer calls ``set_epoch(epoch)`` on the prepared DataLoader before each epoch. Accelerate's
    ``DataLoaderShard.set_epoch`` reaches a batch sampler only where it is the DataLoader's own (one process); in a
    multi-process run it is wrapped in accelerate's ``BatchSamplerShard``, and on a resume mid-epoch in
    ``SkipBatchSampler`` too (the Trainer reaches one level of wrapping, not two), so the resumed epoch would
    replay epoch 0's batch order. In every case ``DataLoaderShard.set_epoch`` also calls the dataset's
    ``set_epoch``: this one sets the sampler's epoch.
    """

    def __init__(self, dataset, sampler: MaxTokensBatchSampler):
        self.dataset = dataset
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)




class BatchRecord:
    """A debugging record of the data order, a stage of the data path (``CTCTrainer(batch_record=path)``): each
    process appends one JSON line per training batch it collates, ``{"epoch": e, "ids": [utterance ids]}``, to
    ``<path>.<process index>``, then collates as usual (an undecodable file's id is null). The epoch is the batch
    sampler's when the batch is collated (with persistent DataLoader workers, the one their copy was made in). What
    a process collates is what it trains on, except the batches prefetched when a run stops mid-epoch."""

    def __init__(self, collate: Callable, sampler: MaxTokensBatchSampler, path: str):
        self.collate = collate
        self.sampler = sampler
        self.path = path

    def __call__(self, examples: list):
        ids = [example["id"] if isinstance(example, dict) and "id" in example else None for example in examples]
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"epoch": self.sampler.epoch, "ids": ids}) + "\n")
        return self.collate(examples)


_ADVICE = "raise --max_tokens, or leave long files out with --max_duration_s"


def _names(dataset) -> list[str] | None:
    """Utterance ids (else paths) of an ``AudioDataset`` or a dataset with such a column, for messages."""
    source = getattr(dataset, "hf_dataset", dataset)
    for column in ("id", "path"):
        try:
            return list(source[column])
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return None


def _lengths(dataset) -> list[int]:
    """Audio samples per item: ``AudioDataset`` (its ``hf_dataset``) or a dataset with a ``num_samples`` column."""
    source = getattr(dataset, "hf_dataset", dataset)
    try:
        return list(source["num_samples"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("batching by max_tokens needs the audio length of each item: pass an AudioDataset over a "
                         "load_speech_dataset dataset, or a dataset with a 'num_samples' column") from error
