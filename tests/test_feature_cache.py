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


def ctc_step(model, batch, mask, labels, conv_features=None):
    model.zero_grad()
    out = model(batch, attention_mask=mask, labels=labels, conv_features=conv_features)
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
    encoder = model.wav2vec2.feature_extractor
    for b, (logits, loss, grads) in zip(batches, reference):
        batch, mask = padded([utterances[i] for i in b])
        features = cache(encoder, batch, [f"utt{i}" for i in b], [len(utterances[i]) for i in b])
        got_logits, got_loss, got_grads = ctc_step(model, batch, mask, labels, conv_features=features)
        torch.testing.assert_close(got_logits, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_loss, loss, rtol=1e-5, atol=1e-5)
        assert got_grads.keys() == grads.keys() and not any("feature_extractor" in n for n in grads)
        for name in grads:
            torch.testing.assert_close(got_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert (cache.misses, cache.hits, len(cache)) == (4, 4, 4)
    assert "feature_cache" not in "".join(model.state_dict())  # not part of the weights


def test_trainable_encoder_is_refused_and_a_full_budget_stores_nothing():
    model = W2V2ForCTC(tiny_config(vocab_size=12))
    batch, mask = padded([torch.randn(3000), torch.randn(2000)])
    lengths = mask.sum(1)
    encoder = model.wav2vec2.feature_extractor
    ids, sizes = ["a", "b"], lengths.tolist()
    # the encoder trains: its frames change with every update, so a cache would be wrong
    with pytest.raises(ValueError, match="frozen feature encoder"):
        FeatureCache()(encoder, batch, ids, sizes)
    model.freeze_feature_encoder()
    expected = encoder(batch, lengths)
    tight = FeatureCache(max_bytes=1)  # no room: computed, correct, not stored
    for _ in range(2):
        got = tight(encoder, batch, ids, sizes)
        for i, frames in enumerate(model.num_frames(lengths).tolist()):
            torch.testing.assert_close(got[i, :frames], expected[i, :frames])
            assert not got[i, frames:].any()
    assert len(tight) == 0 and tight.misses == 4


def test_the_autocast_state_and_the_length_are_part_of_the_key():
    model = W2V2ForCTC(tiny_config(vocab_size=12))
    model.freeze_feature_encoder()
    encoder, cache = model.wav2vec2.feature_extractor, FeatureCache()
    audio = torch.randn(1, 3000)
    full = cache(encoder, audio, ["a"], [3000])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cache(encoder, audio, ["a"], [3000])
        assert low.dtype == encoder(audio).dtype
    assert len(cache) == 2 and cache.hits == 0
    torch.testing.assert_close(cache(encoder, audio, ["a"], [3000]), full)  # a hit, in fp32 again
    assert cache.hits == 1
    cache(encoder, audio[:, :2500], ["a"], [2500])  # the same id with another length: not the same utterance
    assert len(cache) == 3 and cache.hits == 1


def test_the_trainer_looks_frames_up_by_the_collators_ids(tmp_path):
    """CTCTrainer with a cache: a collator with return_ids names each batch's utterances, the trainer hands the model
    their cached frames; the loss equals the uncached model's."""
    from transformers import TrainingArguments

    from hf_wav2vec2.training.finetune import CTCTrainer

    model = W2V2ForCTC(tiny_config(vocab_size=12, mask_time_prob=0.0, mask_feature_prob=0.0, ctc_loss_reduction="sum"))
    model.freeze_feature_encoder()
    batch, mask = padded([torch.randn(4000), torch.randn(3000)])
    inputs = {"input_values": batch, "attention_mask": mask, "labels": torch.randint(1, 12, (2, 4)),
              "ids": ["x", "y"], "num_samples": [4000, 3000]}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    cache = FeatureCache()
    trainer = CTCTrainer(model=model, args=args, feature_cache=cache)
    plain = CTCTrainer(model=model, args=args)
    with torch.no_grad():
        expected = plain.compute_loss(model, {k: v for k, v in inputs.items() if k not in ("ids", "num_samples")})
        for hits in (0, 2):  # the first batch computes and stores its frames, the second finds them
            torch.testing.assert_close(trainer.compute_loss(model, dict(inputs)), expected)
            assert cache.hits == hits
    assert (cache.misses, len(cache)) == (2, 2)
