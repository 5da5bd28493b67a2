"""The frozen feature encoder's output per utterance, computed once and reused: a stage of the fine-tuning data path.

The paper fine-tunes with the CNN feature encoder frozen, so every epoch recomputes the same frames for the same
audio. ``CTCTrainer(feature_cache=FeatureCache(...))`` looks each batch's utterances up by id (the collator's
``ids`` and ``num_samples``, host lists: no device-to-host copy of the audio, no hashing of it) and hands the model
their frames explicitly (``W2V2ForCTC(..., conv_features=...)``); utterances not yet seen are computed by the encoder
and stored on the CPU, up to a byte budget.

Why it is exact: the encoder has no dropout and its one norm reading time (the first layer's group norm) reads each
item's real frames only, so an item's real frames do not depend on the batch around it or on the mode (train or
eval). The frames past an item's length are 0 here, where the encoder leaves values computed from padding; the model
zeroes those frames before the context network and the losses skip them. Keys are the utterance id, its length and
the autocast state: the ids must name utterances uniquely (``load_speech_dataset``'s do), and the audio of an id must
not change between epochs (no augmentation of the waveform: train_ctc.py has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .feature_encoder import FeatureEncoder
from .frames import num_frames


class FeatureCache:
    """Stores a frozen feature encoder's frames per utterance on the CPU, up to ``max_bytes`` (then it computes
    without storing).

    ``cache(encoder, input_values (B, L), ids, num_samples) -> (B, T, C)``: what ``encoder(input_values, lengths)``
    returns on each item's real frames, zeros past them; ``ids`` and ``num_samples`` are the items' utterance ids and
    real sample counts (host lists). One cache serves one frozen encoder: with gradients through the encoder it
    would be wrong, and it raises."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.hits = self.misses = 0
        self._frames: dict[tuple, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def __call__(self, encoder: FeatureEncoder, input_values: torch.Tensor, ids: Sequence[str],
                 num_samples: Sequence[int]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters()):
            raise ValueError("FeatureCache serves a frozen feature encoder only (freeze_feature_encoder); this one "
                             "trains, so its frames change with every update")
        device = input_values.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        keys = [(utterance, int(n), input_values.dtype, autocast) for utterance, n in zip(ids, num_samples)]
        frames = [int(num_frames(int(n), encoder.conv_kernel, encoder.conv_stride)) for n in num_samples]
        found = {i: self._frames[key] for i, key in enumerate(keys) if key in self._frames}
        missing = [i for i in range(len(keys)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            longest = max(int(num_samples[i]) for i in missing)
            index = torch.tensor(missing, device=device)
            lengths = torch.tensor([int(num_samples[i]) for i in missing], device=device)
            computed = encoder(input_values[index, :longest], lengths)  # (M, T', C)
            for row, i in enumerate(missing):
                found[i] = computed[row, : frames[i]]
                size = found[i].numel() * found[i].element_size()
                if self.stored_bytes + size <= self.max_bytes:
                    self._frames[keys[i]] = found[i].to("cpu", copy=True)
                    self.stored_bytes += size
        first = next(iter(found.values()))
        total = num_frames(input_values.shape[1], encoder.conv_kernel, encoder.conv_stride)
        out = first.new_zeros((len(keys), total, first.shape[-1]), device=device)  # (B, T, C)
        for i, item in found.items():
            out[i, : frames[i]] = item.to(device, non_blocking=True)
        return out
