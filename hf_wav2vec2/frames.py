"""Samples -> frames: the one place where audio lengths become frame counts.

The model, the collators, the config (``W2V2Config.receptive_field``), the pipeline and the analyses call these; the
CTC loss, the Trainer and dataset transcription read the frame counts the model returns. A test checks them against
the real conv stack (``tests/test_model.py``). Pure arithmetic: it imports nothing of the package, so the config can
use it without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def num_frames(num_samples: int | torch.Tensor, conv_kernel: Sequence[int], conv_stride: Sequence[int]):
    """Frames produced by a stack of unpadded 1-D convolutions from ``num_samples`` samples (int or LongTensor).

    Each layer maps ``L -> floor((L - kernel) / stride) + 1``; a result below 1 means the audio is shorter than the
    receptive field (callers check ``W2V2Config.receptive_field``).
    """
    for kernel, stride in zip(conv_kernel, conv_stride):
        num_samples = (num_samples - kernel) // stride + 1
    return num_samples


def receptive_field(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Audio samples seen by one output frame: the shortest input for which :func:`num_frames` is 1."""
    field, jump = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def frame_mask(frame_lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """(B,) real frames per item -> (B, max_frames) bool, True on the first ``frame_lengths[b]`` positions."""
    return torch.arange(max_frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]
