"""Span masks and negative sampling (sections 3.1 and 3.2): pure, vectorized torch functions.

Every function takes an explicit ``torch.Generator`` and draws on that generator's device: the same seed gives the
same masks on the same kind of device (CPU and CUDA generators produce different streams). No Python loop over
batch items or frames, no data-dependent shapes.
"""

from __future__ import annotations

import torch


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is not None:
        device = generator.device
    return torch.rand(shape, generator=generator, device=device)


def _rank_by_random_key(keys: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest) of every entry of each row of ``keys`` (B, T)."""
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    return ranks


def compute_span_mask(
    lengths: torch.Tensor,
    max_len: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    require_same_masks: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample span masks (B, max_len) bool over items of ``lengths`` (B,) valid positions each.

    For each item (fairseq ``compute_mask_indices``, ``mask_selection=static``):
      num_spans = max(min_masks, int(mask_prob * length / mask_length + u)),  u ~ U[0, 1) per item;
      span starts drawn without replacement from [0, length - mask_length]; spans may overlap, so the masked
      fraction is below mask_prob (about 49% for p=0.65, M=10). Positions >= length (padding) are never masked.
    With ``require_same_masks`` every item then keeps a random subset of its masked positions so that all items end
    with the smallest count in the batch.
    """
    device = generator.device if generator is not None else lengths.device
    lengths = lengths.to(device=device, dtype=torch.long)
    batch = lengths.shape[0]
    num_starts = (lengths - mask_length + 1).clamp_min(0)  # (B,)
    num_spans = torch.floor(mask_prob * lengths / mask_length + _rand(batch, generator, device)).long()
    num_spans = torch.minimum(num_spans.clamp_min(min_masks), num_starts)

    # Random keys on the valid starts; the num_spans largest keys of a row are a sample without replacement.
    positions = torch.arange(max_len, device=device)[None, :]
    keys = _rand((batch, max_len), generator, device)
    keys = torch.where(positions < num_starts[:, None], keys, -1.0)
    rank_desc = _rank_by_random_key(-keys)  # 0 = largest key
    starts = rank_desc < num_spans[:, None]  # (B, T) bool

    # A position is masked if a span started within the previous mask_length positions: a windowed count of starts.
    started = starts.long().cumsum(1)
    before = torch.nn.functional.pad(started, (mask_length, 0))[:, :max_len]
    mask = (started - before) > 0

    if require_same_masks and batch > 1:
        target = mask.sum(1).min()
        keep_keys = torch.where(mask, _rand((batch, max_len), generator, device), 2.0)
        mask = mask & (_rank_by_random_key(keep_keys) < target)
    return mask


def sample_negatives(
    mask: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """K distractors for every masked frame, drawn uniformly with replacement from the *other* masked frames of the
    same utterance (eq. 3; fairseq ``sample_negatives``).

    mask: (B, T) bool. Returns (B, T, K) long frame indices within each utterance; entries at unmasked positions
    are 0 and meaningless. An utterance with a single masked frame has no distractor: its entries point at the
    positive itself, which the loss turns into -inf logits.
    """
    device = generator.device if generator is not None else mask.device
    mask = mask.to(device)
    batch, length = mask.shape
    num_masked = mask.sum(1)  # (B,)
    rank = mask.long().cumsum(1) - 1  # (B, T) index of a masked frame among its row's masked frames
    draws = _rand((batch, length, num_negatives), generator, device)
    # Draw from the n - 1 others, then step over the positive: uniform over masked frames except itself.
    others = (num_masked - 1).clamp_min(0)[:, None, None]
    idx = torch.floor(draws * others).long()
    idx = idx + (idx >= rank[..., None]).long()
    idx = torch.where(others > 0, idx, rank[..., None].clamp_min(0))  # no other masked frame: the positive
    # Masked frame positions of each row, in order, first: a stable sort of ~mask.
    masked_positions = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # (B, T)
    negatives = masked_positions.gather(1, idx.clamp(0, length - 1).view(batch, -1)).view(batch, length, -1)
    return negatives.masked_fill(~mask[..., None], 0)


def compute_channel_mask(
    batch: int, num_channels: int, mask_prob: float, mask_length: int, min_masks: int = 0,
    generator: torch.Generator | None = None, device=None,
) -> torch.Tensor:
    """(B, C) bool channel mask for fine-tuning (fairseq ``mask_channel_*``): spans over the channel axis, one
    independent draw per utterance; the caller zeroes those channels at every time step."""
    device = generator.device if generator is not None else device
    lengths = torch.full((batch,), num_channels, dtype=torch.long, device=device)
    return compute_span_mask(lengths, num_channels, mask_prob, mask_length, min_masks, generator=generator)
