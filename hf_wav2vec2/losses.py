"""The losses as pure functions: the pretraining objective (section 3.2) and CTC (section 4). Nothing here divides by
the masked-frame count: the training loop normalises the summed pretraining loss once, by the count gathered over
all processes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


def contrastive_logits(
    context: torch.Tensor, targets: torch.Tensor, negative_index: torch.Tensor, same_code: torch.Tensor,
    kappa: float,
) -> torch.Tensor:
    """sim(c_t, [q_t, q~_1..K]) / kappa for every masked frame (eq. 3), cosine similarity in fp32.

    context: (N, D) projected c_t; targets: (N, D) projected q_t of the same frames; negative_index: (N, K) rows of
    ``targets`` used as distractors; same_code: (N, K) True where a distractor is the positive's own code, whose
    logit becomes -inf (a distractor identical to the target cannot be told apart). Returns (N, 1 + K).
    """
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    q = F.normalize(targets.float(), dim=-1, eps=1e-8)
    positive = (c * q).sum(-1, keepdim=True)  # (N, 1)
    # c_t . q_j for every masked j at once ((N, N) GEMM), then pick the K distractors: no (N, K, D) tensor.
    negative = (c @ q.T).gather(1, negative_index)  # (N, K)
    negative = negative.masked_fill(same_code, float("-inf"))
    return torch.cat([positive, negative], dim=1) / kappa


def contrastive_loss(logits: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE summed over frames: -log softmax(logits)[0]. rows: (N,) bool, the rows that count (all when None).
    Returns (loss sum, number of counted frames whose positive scores highest, counting a row whose logits are all
    equal as wrong, as fairseq does)."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    correct = (logits.argmax(-1) == 0) & ~(logits.argmin(-1) == 0)
    if rows is None:
        return F.cross_entropy(logits, target, reduction="sum"), correct.sum()
    loss = F.cross_entropy(logits, target, reduction="none")
    return torch.where(rows, loss, 0.0).sum(), (correct & rows).sum()


def diversity_loss(prob_perplexity: torch.Tensor, num_codevectors: int) -> torch.Tensor:
    """L_d = (GV - perplexity) / GV (eq. 4, as fairseq scales it): 0 when all G*V entries are used equally."""
    return (num_codevectors - prob_perplexity) / num_codevectors


def feature_penalty(features: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared activation of the conv encoder output (fairseq ``features_pen``), over real frames.
    features: (B, T, C); valid: (B, T) bool or None."""
    sq = features.float().square()
    if valid is None:
        return sq.mean()
    return (sq * valid[..., None]).sum() / (valid.sum() * features.shape[-1]).clamp_min(1)


@dataclass
class PretrainingLoss:
    """The loss and its three parts, each a sum over the masked frames."""

    total: torch.Tensor
    contrastive_sum: torch.Tensor
    diversity_sum: torch.Tensor
    feature_penalty_sum: torch.Tensor


def pretraining_loss(
    contrastive_sum: torch.Tensor, diversity: torch.Tensor, penalty: torch.Tensor, num_masked: torch.Tensor,
    diversity_weight: float, penalty_weight: float,
) -> PretrainingLoss:
    """L = L_m + alpha * L_d * n + beta * penalty * n, with n the local masked-frame count (fairseq scales the extra
    losses by sample_size so that dividing the sum by the global count gives their plain weighted mean)."""
    n = num_masked.to(contrastive_sum.dtype)
    total = contrastive_sum + diversity_weight * diversity * n + penalty_weight * penalty * n
    return PretrainingLoss(total, contrastive_sum, diversity * n, penalty * n)


def ctc_loss(logits: torch.Tensor, labels: torch.Tensor, frames: torch.Tensor, blank: int, reduction: str,
             zero_infinity: bool) -> torch.Tensor:
    """CTC over (B, T, V) logits with fp32 log-softmax. labels (B, U): entries < 0 or == blank are padding;
    frames (B,): real frames per item. ``reduction``: "sum", or "mean" (each loss divided by its target length, then
    averaged over the batch, transformers' semantics)."""
    targets_mask = (labels >= 0) & (labels != blank)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC demands int32 lengths and targets on the CPU
        return F.ctc_loss(log_probs, labels[targets_mask], frames.to(torch.long), targets_mask.sum(-1),
                          blank=blank, reduction=reduction, zero_infinity=zero_infinity)
