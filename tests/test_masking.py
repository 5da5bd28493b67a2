"""Properties of span masks and negative sampling (section 3.1, eq. 3)."""

import torch

from hf_wav2vec2.masking import compute_channel_mask, compute_span_mask, sample_negatives


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_masked_fraction_is_about_49_percent_for_p065_m10():
    lengths = torch.full((64,), 500)
    mask = compute_span_mask(lengths, 500, 0.65, 10, min_masks=2, generator=_gen())
    # Spans overlap, so the fraction is 1 - (1 - p/M)^M ~ 0.49, not 0.65 (paper, section 4.2).
    assert abs(mask.float().mean().item() - 0.49) < 0.02


def test_span_count_formula():
    # Without overlap a row has exactly num_spans * M masked frames: M = 1 isolates the count.
    lengths = torch.full((2000,), 100)
    mask = compute_span_mask(lengths, 100, 0.3, 1, min_masks=0, generator=_gen())
    counts = mask.sum(1).float()
    # int(p * L / M + u) with u ~ U[0,1) is 30 always for p*L/M = 30 exactly.
    assert (counts == 30).all()
    mask = compute_span_mask(torch.full((4000,), 100), 100, 0.305, 1, generator=_gen())
    counts = mask.sum(1).float()
    assert set(counts.unique().tolist()) == {30.0, 31.0}
    assert abs(counts.mean().item() - 30.5) < 0.05  # E[int(30.5 + u)] = 30.5


def test_min_masks_and_short_rows():
    mask = compute_span_mask(torch.tensor([50, 12, 5]), 50, 0.0, 10, min_masks=2, generator=_gen())
    assert mask[0].sum() >= 10  # at least two spans of 10 (may overlap: >= 10)
    assert mask[1].sum() >= 10 and not mask[1, 12:].any()
    assert not mask[2].any()  # shorter than one span: nothing can be masked


def test_padding_never_masked_and_same_count_per_row():
    lengths = torch.tensor([400, 250, 90, 400])
    mask = compute_span_mask(lengths, 400, 0.65, 10, min_masks=2, require_same_masks=True, generator=_gen())
    positions = torch.arange(400)[None]
    assert not (mask & (positions >= lengths[:, None])).any()
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] > 0


def test_same_seed_same_masks_and_negatives():
    lengths = torch.tensor([300, 200])
    a = compute_span_mask(lengths, 300, 0.65, 10, 2, True, _gen(7))
    b = compute_span_mask(lengths, 300, 0.65, 10, 2, True, _gen(7))
    c = compute_span_mask(lengths, 300, 0.65, 10, 2, True, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(sample_negatives(a, 20, _gen(1)), sample_negatives(a, 20, _gen(1)))


def test_negatives_are_other_masked_frames_of_the_same_utterance():
    lengths = torch.tensor([300, 120, 300])
    mask = compute_span_mask(lengths, 300, 0.65, 10, 2, False, _gen(3))
    neg = sample_negatives(mask, 100, _gen(4))
    assert neg.shape == (3, 300, 100)
    rows = torch.arange(3)[:, None, None].expand_as(neg)
    frames = torch.arange(300)[None, :, None].expand_as(neg)
    at_masked = mask[..., None].expand_as(neg)
    assert mask[rows, neg][at_masked].all()  # always a masked frame of the same row
    assert not (neg == frames)[at_masked].any()  # never the positive itself
    # Uniform over the others: every other masked frame of a row gets drawn.
    first = mask[0].nonzero().squeeze(1)
    drawn = neg[0][mask[0]].unique()
    assert torch.equal(drawn, first)


def test_single_masked_frame_points_at_itself():
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, 5] = True
    neg = sample_negatives(mask, 4, _gen())
    assert (neg[0, 5] == 5).all()


def test_channel_mask_is_per_utterance():
    mask = compute_channel_mask(16, 256, 0.5, 64, generator=_gen())
    assert mask.shape == (16, 256)
    assert 0.2 < mask.float().mean() < 0.6
    assert len({tuple(row.nonzero().squeeze(1).tolist()) for row in mask}) > 1
