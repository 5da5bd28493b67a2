"""The typed outputs of the models (shapes written down): what :mod:`.modeling`'s forward passes return."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class W2V2BaseModelOutput(ModelOutput):
    """
    last_hidden_state: (B, T, H) context representations ``c``.
    extract_features: (B, T, C) layer-normalised conv features (the quantizer input).
    feature_penalty: () mean squared conv feature over real frames (fp32).
    frame_mask: (B, T) bool real frames, or None when the input was not padded.
    hidden_states: tuple of (B, T, H): the input of every block, then the final output; when asked.
    """

    last_hidden_state: torch.Tensor | None = None
    extract_features: torch.Tensor | None = None
    feature_penalty: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class W2V2ForPreTrainingOutput(ModelOutput):
    """The loss and its parts are sums over the masked frames of this batch (the training loop divides them once, by
    the masked count gathered over all processes). transformers calls the first two parts ``contrastive_loss`` and
    ``diversity_loss`` (also sums).

    loss: () L_m + alpha * L_d * n + beta * penalty * n.
    contrastive_loss_sum: () InfoNCE summed over masked frames (eq. 3).
    diversity_loss_sum: () L_d * n, L_d = (GV - prob_perplexity) / GV (eq. 4).
    feature_penalty_sum: () mean squared conv feature (``W2V2BaseModelOutput.feature_penalty``) * n.
    prob_perplexity: () perplexity of the codebook softmax averaged over the masked frames, summed over groups
        (fairseq ``prob_perplexity``; the diversity loss uses it, in training and eval alike).
    code_perplexity: () perplexity of the codes chosen by argmax (hard).
    accuracy: () fraction of masked frames whose true quantized target scores highest.
    num_masked: () n, masked frames in this batch.
    projected_states: (N, D) ``project_hid(c_t)`` at the masked frames, in row-major (batch, time) order.
    projected_quantized_states: (N, D) ``project_q(q_t)`` at the same frames.
    logits: (N, 1 + K) contrastive logits, positive first.
    mask_time_indices: (B, T) bool, the mask used.
    hidden_states: as in :class:`W2V2BaseModelOutput`.
    """

    loss: torch.Tensor | None = None
    contrastive_loss_sum: torch.Tensor | None = None
    diversity_loss_sum: torch.Tensor | None = None
    feature_penalty_sum: torch.Tensor | None = None
    prob_perplexity: torch.Tensor | None = None
    code_perplexity: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    num_masked: torch.Tensor | None = None
    projected_states: torch.Tensor | None = None
    projected_quantized_states: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask_time_indices: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class W2V2CTCOutput(ModelOutput):
    """loss: () CTC loss (reduction per ``config.ctc_loss_reduction``); logits: (B, T, V); frame_lengths: (B,) long,
    the real frames of each item (frames past them come from padding: decode them as blank); hidden_states: as in
    :class:`W2V2BaseModelOutput`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    frame_lengths: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
