"""The frozen feature encoder's cache against the model without it: same CTC logits, loss and gradients, whatever
batch an utterance comes in, and nothing stored where it would be wrong."""

import pytest
import torch
from conftest import tiny_config

from hf_wav2vec2 import W2V2ForCTC
from hf_wav2vec2.feature_cache import FeatureCache


def padded(items):
    lengths = torch.tensor([len(x) for x in items])
    batch = torch.zeros(len(items), int(lengths.max()))
    for i, x in enumerate(items):
        batch[i, : len(x)] = x
    return batch, (torch.arange(batch.shape[1]) < lengths[:, None]).long()


def ctc_step(model, batch, mask, labels):
    model.zero_grad()
    out = model(batch, attention_mask=mask, labels=labels)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                   if p.grad is not None}


@pytest.mark.parametrize("variant", ["group_postln", "layer_preln"])
def test_cached_frames_give_the_same_loss_and_gradients_in_any_batch(variant):
    model = W2V2ForCTC(tiny_config(variant, vocab_size=12, mask_time_prob=0.0, mask_feature_prob=0.0))
    model.freeze_feature_encoder()
    model.train()
    utterances = [torch.randn(n) for n in (4000, 2500, 3300, 4000)]
    labels = torch.randint(1, 12, (2, 5))
    batches = [(0, 1), (2, 1), (3, 0), (1, 2)]  # utterance 1 in three batches, at three places, padded differently
    reference = [ctc_step(model, *padded([utterances[i] for i in b]), labels) for b in batches]

    cache = FeatureCache()
    model.wav2vec2.feature_cache = cache
    for b, (logits, loss, grads) in zip(batches, reference):
        got_logits, got_loss, got_grads = ctc_step(model, *padded([utterances[i] for i in b]), labels)
        torch.testing.assert_close(got_logits, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_loss, loss, rtol=1e-5, atol=1e-5)
        assert got_grads.keys() == grads.keys() and not any("feature_extractor" in n for n in grads)
        for name in grads:
            torch.testing.assert_close(got_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert (cache.misses, cache.hits, len(cache)) == (4, 4, 4)
    assert "feature_cache" not in "".join(model.state_dict())  # not part of the weights


def test_trainable_encoder_and_full_budget_store_nothing():
    model = W2V2ForCTC(tiny_config(vocab_size=12))
    batch, mask = padded([torch.randn(3000), torch.randn(2000)])
    lengths = mask.sum(1)
    encoder = model.wav2vec2.feature_extractor
    cache = FeatureCache()
    # the encoder trains: its frames change with every update, so the cache only forwards the call
    expected = encoder(batch, lengths)
    torch.testing.assert_close(cache(encoder, batch, lengths), expected)
    assert len(cache) == 0 and cache.misses == 0
    model.freeze_feature_encoder()
    tight = FeatureCache(max_bytes=1)  # no room: computed, correct, not stored
    for _ in range(2):
        got = tight(encoder, batch, lengths)
        for i, frames in enumerate(model.num_frames(lengths).tolist()):
            torch.testing.assert_close(got[i, :frames], expected[i, :frames])
            assert not got[i, frames:].any()
    assert len(tight) == 0 and tight.misses == 4


def test_the_autocast_state_is_part_of_the_key():
    model = W2V2ForCTC(tiny_config(vocab_size=12))
    model.freeze_feature_encoder()
    encoder, cache = model.wav2vec2.feature_extractor, FeatureCache()
    audio = torch.randn(1, 3000)
    full = cache(encoder, audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cache(encoder, audio)
        assert low.dtype == encoder(audio).dtype
    assert len(cache) == 2 and cache.hits == 0
    torch.testing.assert_close(cache(encoder, audio), full)  # a hit, in fp32 again
    assert cache.hits == 1
