"""Lazy decoding dataset and the pretraining collator: random crops, zero padding, attention mask, normalisation."""

import logging
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..configuration import SAMPLING_RATE
from .audio import AudioError, example_waveform

logger = logging.getLogger("hf_wav2vec2.data")


class AudioDataset(torch.utils.data.Dataset):
    """Decodes rows of a ``load_speech_dataset`` dataset on access (in DataLoader workers, not up front).

    ``dataset[i]`` is ``{"id": str, "input_values": (num_samples,) float32, "text": str}``, or None when the file
    cannot be decoded (the path and reason are logged on "hf_wav2vec2.data"); the collators drop None.
    """

    def __init__(self, hf_dataset, target_sr: int = SAMPLING_RATE, *, min_samples: int = 1,
                 max_channels: int | None = None):
        self.hf_dataset = hf_dataset
        self.target_sr = target_sr
        self.min_samples = min_samples
        self.max_channels = max_channels

    def __len__(self) -> int:
        return len(self.hf_dataset)

    def __getitem__(self, index: int) -> dict | None:
        row = self.hf_dataset[int(index)]
        try:
            waveform = example_waveform(row, self.target_sr, min_samples=self.min_samples,
                                        max_channels=self.max_channels)
        except AudioError as error:
            logger.warning("dropping %s: %s", error.source, error.reason)
            return None
        return {"id": row["id"], "input_values": waveform, "text": row.get("text", "")}


class PretrainingCollator:
    """Turns a list of utterances into a padded batch for self-supervised pretraining.

    Each example is a mapping with ``input_values`` (1-D float array/tensor at ``target_sr``) or, to decode here,
    ``path`` (and ``audio`` for Hub rows), as rows of ``load_speech_dataset`` have; None examples are dropped.

    1. The waveform (``example_waveform``: the given ``input_values``, or the decoded file); an example that is
       undecodable, holds NaN/inf or is shorter than ``min_samples`` (pass the model's receptive field,
       ``config.receptive_field``) is logged with its name and dropped.
    2. Crop utterances longer than ``max_sample_size`` at a random start (fairseq ``max_sample_size``). With
       ``pad=False`` every utterance is instead cropped to the shortest in the batch (fairseq's default for BASE,
       no padding at all).
    3. Optionally normalise each utterance to zero mean and unit variance over its real samples (``normalize``,
       fairseq ``normalize=True``, for the layer-norm LARGE models; HF's ``do_normalize``).
    4. Pad with zeros to the longest (rounded up to ``pad_to_multiple_of``); ``attention_mask`` is 1 on real samples.

    Returns ``{"input_values": (B, L) float32, "attention_mask": (B, L) long}``, or **None when no example in the
    batch is usable**: a training loop must skip None batches.

    Crops are random but reproducible: each batch gets ``numpy.random.default_rng([seed, epoch, crc32(ids)])``,
    seeded from the utterance ids (or, for examples without ``id``, their lengths), so results do not depend on
    which DataLoader worker collates a batch or in what order. Call ``set_epoch`` before each epoch for new crops
    (DataLoader workers receive a copy of the collator when an epoch's iterator starts, unless persistent_workers).
    """

    def __init__(
        self,
        max_sample_size: int | None = None,
        *,
        pad: bool = True,
        normalize: bool = False,
        seed: int = 0,
        target_sr: int = SAMPLING_RATE,
        min_samples: int = 1,
        pad_to_multiple_of: int | None = None,
    ):
        self.max_sample_size = max_sample_size
        self.pad = pad
        self.normalize = normalize
        self.seed = seed
        self.target_sr = target_sr
        self.min_samples = min_samples
        self.pad_to_multiple_of = pad_to_multiple_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, examples: Sequence[Mapping | None]) -> dict[str, torch.Tensor] | None:
        # 1. Waveforms, dropping whatever cannot be decoded or is too short for one frame.
        ids, waveforms = [], []
        for example in examples:
            if example is None:  # AudioDataset has already logged the path
                continue
            try:
                waveform = example_waveform(example, self.target_sr, min_samples=self.min_samples)
            except AudioError as error:
                logger.warning("dropping %s: %s", error.source, error.reason)
                continue
            ids.append(str(example.get("id", len(waveform))))
            waveforms.append(waveform)
        if not waveforms:
            logger.warning("no usable example in a batch of %d: returning None", len(examples))
            return None

        # 2. Random crops: to max_sample_size, or (pad=False) to the shortest utterance in the batch.
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(" ".join(ids).encode())])
        target = min(len(w) for w in waveforms) if not self.pad else None
        if self.max_sample_size is not None:
            target = self.max_sample_size if target is None else min(target, self.max_sample_size)
        if target is not None:
            waveforms = [self._crop(w, target, rng) for w in waveforms]

        # 3. Per-utterance normalisation over real samples only (padding is added afterwards).
        if self.normalize:
            # Same formula as transformers' Wav2Vec2FeatureExtractor (zero_mean_unit_var_norm), so pretraining
            # and inference see identically scaled inputs.
            waveforms = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in waveforms]

        # 4. Zero padding and the mask of real samples.
        length = max(len(w) for w in waveforms)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_values = torch.zeros(len(waveforms), length, dtype=torch.float32)  # (B, L)
        attention_mask = torch.zeros(len(waveforms), length, dtype=torch.long)  # (B, L)
        for row, waveform in enumerate(waveforms):
            input_values[row, : len(waveform)] = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
            attention_mask[row, : len(waveform)] = 1
        return {"input_values": input_values, "attention_mask": attention_mask}

    @staticmethod
    def _crop(waveform: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        """A random window of ``size`` samples (the whole waveform if it is not longer)."""
        if len(waveform) <= size:
            return waveform
        start = int(rng.integers(0, len(waveform) - size + 1))
        return waveform[start : start + size]
