"""Batches built by total audio samples (fairseq's ``max_tokens``), bucketed by length, shuffled per epoch."""

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger("hf_wav2vec2.data")


class MaxTokensBatchSampler(Sampler[list[int]]):
    """Groups dataset indices into batches whose padded size fits ``max_tokens`` samples.

    A batch's padded size is ``len(batch) * max(cropped length in batch)`` where an utterance's cropped length is
    ``min(length, max_sample_size)`` (the collator crops to that). Indices are sorted by cropped length, longest
    first, and packed greedily, so each batch holds utterances of similar length and padding stays small; the
    order of the batches is then shuffled. Equal lengths are ordered by a random permutation first, so their
    grouping changes from epoch to epoch too. Everything random comes from ``numpy.random.default_rng([seed,
    epoch])``: the same seed and epoch give the same batches on any machine. The number of batches does not depend
    on the epoch (packing only sees the sorted lengths, and ``num_batches_multiple`` splits by batch size), so
    ``len()`` is fixed.

    Use as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=...)`` and call ``set_epoch(epoch)`` before each
    epoch. With Accelerate, ``accelerator.prepare(dataloader)`` shards these batches across processes: batch ``i``
    goes to process ``i % num_processes``, and when the count is not a multiple of ``num_processes`` accelerate
    pads the last round with the epoch's first batches again (``even_batches``), so pass
    ``num_batches_multiple=num_processes``.

    Args:
        lengths: number of samples of each utterance (e.g. the ``num_samples`` column).
        max_tokens: upper bound on ``batch size * longest cropped length in the batch`` (fairseq ``max_tokens``;
            1.4M samples = 87.5 s per GPU for BASE).
        max_sample_size: utterances are counted as cropped to this many samples (fairseq ``max_sample_size``).
        shuffle: shuffle batch order (and ties) per epoch; False gives longest-first batches in a fixed order.
        seed: base seed.
        required_batch_size_multiple: batch sizes are multiples of this where possible (fairseq's option of the
            same name, for tensor-core-friendly shapes); the remainder goes to the next batch.
        max_batch_size: optional cap on the number of utterances in a batch.
        num_batches_multiple: the batches with the most utterances are halved until the number of batches is a
            multiple of this (pass the number of data-parallel processes): every process then gets as many
            batches and no utterance is repeated. Impossible only when every batch holds a single utterance (a
            warning says so; accelerate then repeats some).
        too_long: what to do with an utterance that alone exceeds ``max_tokens``: ``"raise"`` (a ``ValueError``
            naming it, before any work), ``"skip"`` (left out of every epoch, each logged once by name: training
            cannot crop an utterance that has a transcript), or ``"alone"`` (a batch of its own: evaluation keeps
            every utterance).
        names: what to call utterance ``i`` in messages (ids or paths); default: its index.
        advice: what a message about too-long utterances suggests (the options of the calling script).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        max_sample_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        required_batch_size_multiple: int = 1,
        max_batch_size: int | None = None,
        num_batches_multiple: int = 1,
        too_long: str = "raise",
        names: Sequence[str] | None = None,
        advice: str = "set max_sample_size or drop them with max_duration_s",
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if max_sample_size is not None:
            self.lengths = np.minimum(self.lengths, max_sample_size)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive number of samples, got {max_tokens}")
        if too_long not in ("raise", "skip", "alone"):
            raise ValueError(f"too_long must be 'raise', 'skip' or 'alone', got {too_long!r}")
        oversized = np.flatnonzero(self.lengths > max_tokens)
        self.skipped = []  # indices left out (too_long="skip")
        if len(oversized):
            described = ", ".join(f"{names[i] if names is not None else f'index {i}'} ({self.lengths[i]} samples)"
                                  for i in oversized[:5].tolist()) + (", ..." if len(oversized) > 5 else "")
            if too_long == "raise":
                raise ValueError(f"{len(oversized)} utterance(s) longer than max_tokens={max_tokens} samples: "
                                 f"{described}; {advice}")
            if too_long == "skip":
                self.skipped = oversized.tolist()
                for i in self.skipped:
                    logger.warning("skipping %s: %d samples, more than max_tokens=%d in one batch (%s)",
                                   names[i] if names is not None else f"index {i}", self.lengths[i], max_tokens,
                                   advice)
            else:
                logger.warning("%d utterance(s) longer than max_tokens=%d go in batches of their own: %s",
                               len(oversized), max_tokens, described)
        if required_batch_size_multiple < 1:
            raise ValueError(f"required_batch_size_multiple must be >= 1, got {required_batch_size_multiple}")
        if num_batches_multiple < 1:
            raise ValueError(f"num_batches_multiple must be >= 1, got {num_batches_multiple}")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.multiple = required_batch_size_multiple
        self.max_batch_size = max_batch_size
        self.num_batches_multiple = num_batches_multiple
        self.epoch = 0
        self._kept = np.setdiff1d(np.arange(len(self.lengths)), np.asarray(self.skipped, dtype=np.int64))
        self._num_batches = len(self._pack(self._kept[np.argsort(-self.lengths[self._kept], kind="stable")]))
        if self._num_batches % num_batches_multiple:
            logger.warning("%d batches of one utterance each cannot be split into a multiple of %d: sharded over "
                           "%d processes, some utterances are used twice per epoch", self._num_batches,
                           num_batches_multiple, num_batches_multiple)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle ``__iter__`` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            # A random permutation before the stable sort breaks ties between equal lengths at random.
            permutation = self._kept[rng.permutation(len(self._kept))]
            order = permutation[np.argsort(-self.lengths[permutation], kind="stable")]
            batches = self._pack(order)
            for i in rng.permutation(len(batches)):
                yield batches[i]
        else:
            yield from self._pack(self._kept[np.argsort(-self.lengths[self._kept], kind="stable")])

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """Greedy packing of indices sorted longest first (so the first of a batch is its longest)."""
        batches, batch, longest = [], [], 0
        for index in order.tolist():
            longest_if_added = max(longest, int(self.lengths[index]))
            full = (len(batch) + 1) * longest_if_added > self.max_tokens or (
                self.max_batch_size is not None and len(batch) + 1 > self.max_batch_size
            )
            if full and batch:  # an utterance over max_tokens (too_long="alone") is always full: alone
                # fairseq: keep the largest multiple of required_batch_size_multiple, carry the rest over.
                keep = max(self.multiple * (len(batch) // self.multiple), len(batch) % self.multiple)
                batches.append(batch[:keep])
                batch = batch[keep:]
                longest = max((int(self.lengths[i]) for i in batch), default=0)
                longest_if_added = max(longest, int(self.lengths[index]))
            batch.append(index)
            longest = longest_if_added
        if batch:
            batches.append(batch)
        # Halve the fullest batch until the count is a multiple: batch sizes (not which utterances) decide which
        # batch is split, so the count is the same every epoch.
        while len(batches) % self.num_batches_multiple:
            fullest = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[fullest]) < 2:
                break
            batch = batches.pop(fullest)
            batches[fullest:fullest] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        return batches
