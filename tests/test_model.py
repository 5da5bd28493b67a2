"""Model behaviour beyond parity: frame arithmetic, padding, bad input, losses by hand, ecosystem hooks."""

import math

import pytest
import torch
from conftest import tiny_config, tiny_hf_config
from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoModelForPreTraining, Wav2Vec2ForCTC

from hf_wav2vec2 import W2V2Config, W2V2ForCTC, W2V2ForPreTraining, W2V2Model, num_frames
from hf_wav2vec2.losses import contrastive_logits, contrastive_loss, feature_penalty
from hf_wav2vec2.quantizer import GumbelQuantizer
from hf_wav2vec2.training import gumbel_temperature, tri_stage_lr_lambda


# ------------------------------------------------------------------------------------------ frame arithmetic
@pytest.mark.parametrize("preset", ["base", "tiny"])
def test_num_frames_matches_the_conv_stack(preset):
    cfg = W2V2Config.from_preset(preset)
    model = W2V2Model(cfg).eval()
    assert cfg.receptive_field == 400 and cfg.inputs_to_logits_ratio == 320
    assert num_frames(400, cfg.conv_kernel, cfg.conv_stride) == 1
    assert num_frames(399, cfg.conv_kernel, cfg.conv_stride) == 0
    with torch.no_grad():
        for samples in (400, 719, 720, 16000, 16321):
            out = model.feature_extractor(torch.zeros(1, samples))
            assert out.shape[1] == model.num_frames(samples) == num_frames(torch.tensor(samples), cfg.conv_kernel,
                                                                            cfg.conv_stride)


def test_presets_have_the_papers_shapes():
    base, large = W2V2Config.base(), W2V2Config.large_lv60()
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.proj_codevector_dim) == (
        768, 12, 12, 256)
    assert (base.num_codevector_groups, base.num_codevectors_per_group) == (2, 320)
    assert base.feat_extract_norm == "group" and not base.do_stable_layer_norm and base.feature_grad_mult == 0.1
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.proj_codevector_dim) == (
        1024, 24, 16, 768)
    assert large.feat_extract_norm == "layer" and large.do_stable_layer_norm and large.gumbel_temperature_end == 0.1
    n_params = sum(p.numel() for p in W2V2ForPreTraining(base).parameters())
    assert 94e6 < n_params < 96e6  # the paper's BASE: 95 M parameters


# ------------------------------------------------------------------------------------------------ padding
def _padded_vs_alone(model):
    lengths = [4000, 2731, 1500]
    items = [torch.randn(1, n) for n in lengths]
    batch = torch.zeros(len(items), max(lengths))
    attention_mask = torch.zeros_like(batch, dtype=torch.long)
    for i, item in enumerate(items):
        batch[i, : item.shape[1]] = item
        attention_mask[i, : item.shape[1]] = 1
    with torch.no_grad():
        padded = model(batch, attention_mask=attention_mask).logits
        alone = [model(item).logits for item in items]
    return [(padded[i, : a.shape[1]] - a[0]).abs().max().item() for i, a in enumerate(alone)]


def test_padded_batch_equals_items_alone(variant):
    # Both variants: our group norm takes its statistics over real frames only, so padding changes nothing.
    model = W2V2ForCTC(tiny_config(variant)).eval()
    assert max(_padded_vs_alone(model)) < 1e-4


def test_transformers_group_norm_changes_with_padding_and_we_do_not(tmp_path):
    # What transformers does (kept there for compatibility): the group norm's statistics include the padding, so
    # a padded item's outputs differ from the item alone. Ours agree with the unpadded item.
    hf = Wav2Vec2ForCTC(tiny_hf_config("group_postln")).eval()
    assert max(_padded_vs_alone(hf)[1:]) > 1e-3
    hf.save_pretrained(tmp_path)
    assert max(_padded_vs_alone(W2V2ForCTC.from_pretrained(tmp_path).eval())) < 1e-4


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    model = W2V2ForCTC(tiny_config()).eval()
    rf = model.config.receptive_field  # 40 samples for the three-layer test encoder, 400 for the presets
    with pytest.raises(ValueError, match="receptive field"):
        model(torch.randn(1, rf - 1))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        model(torch.randn(1, 1, 1000))
    with pytest.raises(ValueError, match="NaN"):
        x = torch.randn(1, 1000)
        x[0, 10] = float("nan")
        model(x)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.randn(2, 1000), attention_mask=torch.ones(2, 999))
    mask = torch.ones(2, 1000, dtype=torch.long)
    mask[1, rf - 5:] = 0
    with pytest.raises(ValueError, match=rf"\[\(1, {rf - 5}\)\]"):
        model(torch.randn(2, 1000), attention_mask=mask)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.randn(1, 1000), labels=torch.tensor([[1, 99]]))
    with pytest.raises(TypeError):
        W2V2ForCTC(tiny_config())(torch.randn(1, 4000), labelz=torch.tensor([[1]]))  # a misspelt argument


def test_mask_embedding_starts_as_configured():
    # fairseq's mask_emb is U[0, 1) in every channel; "zeros" starts it at the origin (the tiny preset)
    torch.manual_seed(0)
    paper = W2V2ForPreTraining(tiny_config()).wav2vec2.masked_spec_embed
    assert paper.min() >= 0 and paper.max() < 1 and paper.std() > 0.2
    zeros = W2V2ForPreTraining(tiny_config(mask_embedding_init="zeros")).wav2vec2.masked_spec_embed
    assert zeros.requires_grad and torch.equal(zeros, torch.zeros_like(zeros))
    assert W2V2Config.tiny().mask_embedding_init == "zeros" and W2V2Config.base().mask_embedding_init == "uniform"


def test_inconsistent_config_raises():
    with pytest.raises(ValueError, match="conv_dim.*conv_kernel"):
        W2V2Config(conv_dim=(512, 512), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        W2V2Config(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="codevector_dim"):
        W2V2Config(codevector_dim=255)
    with pytest.raises(ValueError, match="feat_extract_norm"):
        W2V2Config(feat_extract_norm="batch")
    with pytest.raises(ValueError, match="mask_time_prob"):
        W2V2Config(mask_time_prob=1.5)
    with pytest.raises(ValueError, match="mask_embedding_init must be 'uniform' or 'zeros', got 'normal'"):
        W2V2Config(mask_embedding_init="normal")
    with pytest.raises(ValueError, match="unknown preset"):
        W2V2Config.from_preset("huge")


def test_pretraining_rejects_bad_pinned_negatives():
    model = W2V2ForPreTraining(tiny_config()).eval()
    x = torch.randn(1, 4000)
    t = int(model.num_frames(4000))
    mask = torch.zeros(1, t, dtype=torch.bool)
    mask[0, 10:30] = True
    negatives = torch.zeros(1, t, 10, dtype=torch.long)  # frame 0 is not masked
    with pytest.raises(ValueError, match="masked frames"):
        model(x, mask_time_indices=mask, sampled_negative_indices=negatives)


# ------------------------------------------------------------------------------------------ losses by hand
def test_contrastive_logits_and_loss_by_hand():
    torch.manual_seed(1)
    c, q = torch.randn(5, 8), torch.randn(5, 8)
    neg = torch.tensor([[1, 2], [0, 2], [3, 4], [0, 1], [0, 0]])
    same = torch.zeros(5, 2, dtype=torch.bool)
    same[4, 1] = True
    logits = contrastive_logits(c, q, neg, same, kappa=0.1)
    cos = torch.nn.functional.cosine_similarity
    for i in range(5):
        assert torch.isclose(logits[i, 0], cos(c[i], q[i], dim=0) / 0.1, atol=1e-5)
        assert torch.isclose(logits[i, 1], cos(c[i], q[neg[i, 0]], dim=0) / 0.1, atol=1e-5)
    assert logits[4, 2] == float("-inf")
    loss, correct = contrastive_loss(logits)
    by_hand = sum(-torch.log_softmax(row, 0)[0] for row in logits)
    assert torch.isclose(loss, by_hand, atol=1e-5)
    assert correct == sum(int(row.argmax() == 0) for row in logits)


def test_contrastive_loss_and_perplexities_over_chosen_rows_equal_the_subset():
    """The pretraining loss computes every frame's row and counts the masked ones: the loss, the count of correct
    rows and the quantizer's perplexities over chosen rows equal those of the chosen rows alone."""
    torch.manual_seed(2)
    logits = torch.randn(9, 4)
    logits[7] = 0.0  # all equal: wrong, as fairseq counts it
    rows = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    for got, expected in zip(contrastive_loss(logits, rows), contrastive_loss(logits[rows])):
        assert torch.allclose(got, expected)
    quantizer = GumbelQuantizer(12, 2, 5, 8).eval()
    x = torch.randn(9, 12)
    chosen, alone = quantizer(x, rows=rows), quantizer(x[rows])
    assert torch.allclose(chosen.prob_perplexity, alone.prob_perplexity)
    assert torch.allclose(chosen.code_perplexity, alone.code_perplexity)
    assert torch.equal(chosen.chosen_ids[rows], alone.chosen_ids)


def test_pretraining_tensors_do_not_change_shape_with_the_masked_count():
    """Every tensor the pretraining step saves for its backward pass has the same shape whatever the number of
    masked frames: shapes that followed the count, which changes every step, fragmented glibc's heap (the peak RSS
    grew by 25-60 MiB a step, without end, on BASE)."""
    model = W2V2ForPreTraining(tiny_config(num_negatives=3)).train()
    x = torch.randn(2, 8000)
    t = int(model.num_frames(x.shape[1]))
    shapes = []
    for count in (6, 9):
        mask = torch.zeros(2, t, dtype=torch.bool)
        mask[:, 2:2 + count] = True
        shapes.append([])

        def pack(tensor, saved=shapes[-1]):
            saved.append(tuple(tensor.shape))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(x, mask_time_indices=mask, generator=torch.Generator().manual_seed(0))
        assert out.num_masked == 2 * count and out.logits.shape == (2 * count, 4)
        shapes[-1].sort()
    assert shapes[0] == shapes[1]


def test_feature_penalty_by_hand():
    features = torch.randn(2, 6, 3)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    expected = (features[0].square().sum() + features[1, :2].square().sum()) / (8 * 3)
    assert torch.isclose(feature_penalty(features, valid), expected)


def test_pretraining_loss_is_the_weighted_sum_of_its_parts():
    model = W2V2ForPreTraining(tiny_config(feature_penalty_weight=10.0, diversity_loss_weight=0.1)).train()
    out = model(torch.randn(2, 8000), generator=torch.Generator().manual_seed(0))
    n = out.num_masked
    parts = out.contrastive_loss_sum + 0.1 * out.diversity_loss_sum + 10 * out.feature_penalty_sum
    assert torch.isclose(out.loss, parts)
    gv = 16
    assert torch.isclose(out.diversity_loss_sum, (gv - out.prob_perplexity) / gv * n)
    assert 0 <= out.accuracy <= 1 and 1 <= out.code_perplexity <= gv and 1 <= out.prob_perplexity <= gv
    assert out.logits.shape == (n, 11) and out.logits.dtype == torch.float32


def test_sampled_masks_follow_the_generator():
    model = W2V2ForPreTraining(tiny_config()).eval()
    x = torch.randn(2, 8000)
    a = model(x, generator=torch.Generator().manual_seed(3))
    b = model(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask_time_indices, b.mask_time_indices) and torch.equal(a.loss, b.loss)
    counts = a.mask_time_indices.sum(1)
    assert (counts == counts[0]).all()  # require_same_masks


# ------------------------------------------------------------------------------------------------ quantizer
def test_quantizer_eval_gather_equals_training_matmul_of_the_same_codes():
    q = GumbelQuantizer(12, 2, 5, 8)
    torch.nn.init.normal_(q.codevectors)
    x = torch.randn(7, 12)
    out = q.eval()(x)
    book = q.codevectors.view(2, 5, 4)
    expected = torch.cat([book[0, out.chosen_ids[:, 0]], book[1, out.chosen_ids[:, 1]]], dim=-1)
    assert torch.allclose(out.codevectors, expected)
    q.train()
    trained = q(x)
    picked = torch.cat([book[0, trained.chosen_ids[:, 0]], book[1, trained.chosen_ids[:, 1]]], dim=-1)
    assert torch.allclose(trained.codevectors, picked)  # hard straight-through: exactly one codeword per group


def test_gumbel_and_tri_stage_schedules():
    cfg = W2V2Config.base()
    assert gumbel_temperature(0, cfg) == 2.0
    assert math.isclose(gumbel_temperature(100_000, cfg), 2 * 0.999995**100_000)
    assert gumbel_temperature(10**7, cfg) == 0.5
    lr = tri_stage_lr_lambda(1000)
    assert math.isclose(lr(0), 0.01) and lr(100) == 1.0 and lr(499) == 1.0
    assert math.isclose(lr(1000), 0.05) and 0.05 < lr(750) < 1.0


# -------------------------------------------------------------------------------------------------- training
def test_feature_grad_mult_scales_the_conv_gradient():
    x = torch.randn(2, 4000)
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(0)
        model = W2V2Model(tiny_config(feature_grad_mult=mult, mask_time_prob=0.0))
        model(x).last_hidden_state.square().sum().backward()
        grads[mult] = model.feature_extractor.conv_layers[0].conv.weight.grad
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-8)
    model = W2V2Model(tiny_config(feature_grad_mult=0.0, mask_time_prob=0.0))
    model(x).last_hidden_state.sum().backward()
    assert model.feature_extractor.conv_layers[0].conv.weight.grad is None


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 4000)
    labels = torch.tensor([[1, 2, 3], [4, 5, -100]])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = W2V2ForCTC(tiny_config(mask_time_prob=0.0)).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(x, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_bf16_autocast_end_to_end():
    model = W2V2ForPreTraining(tiny_config()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 8000), generator=torch.Generator().manual_seed(0))
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    ctc = W2V2ForCTC(tiny_config()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ctc(torch.randn(2, 4000), labels=torch.tensor([[1, 2], [3, -100]])).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_freeze_feature_encoder_and_finetune_stages():
    from hf_wav2vec2.training.finetune import set_finetune_stage

    model = W2V2ForCTC(tiny_config())
    model.freeze_feature_encoder()
    assert not any(p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.wav2vec2.encoder.parameters())
    set_finetune_stage(model, frozen=True)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["lm_head.weight", "lm_head.bias"]
    set_finetune_stage(model, frozen=False)
    assert not any(p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.wav2vec2.encoder.parameters())


def test_layerdrop_skips_layers_in_training_only():
    model = W2V2Model(tiny_config(layerdrop=1.0, mask_time_prob=0.0))
    x = torch.randn(1, 4000)
    with torch.no_grad():
        trained = model.train()(x, output_hidden_states=True).hidden_states
        evaluated = model.eval()(x, output_hidden_states=True).hidden_states
    assert all(torch.equal(h, trained[0]) for h in trained[:-1])  # nothing changed between blocks
    assert not torch.equal(evaluated[1], evaluated[0])


# ------------------------------------------------------------------------------------------------ ecosystem
def test_auto_classes_and_safetensors_round_trip(tmp_path):
    cfg = tiny_config()
    assert isinstance(AutoConfig.for_model("w2v2"), W2V2Config)
    for auto, cls in ((AutoModel, W2V2Model), (AutoModelForPreTraining, W2V2ForPreTraining),
                      (AutoModelForCTC, W2V2ForCTC)):
        model = auto.from_config(cfg)
        assert type(model) is cls
    model = W2V2ForCTC(cfg).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(loaded) is W2V2ForCTC and loaded.config.model_type == "w2v2"
    x = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_pretrained_checkpoint_loads_into_ctc(tmp_path):
    pre = W2V2ForPreTraining(tiny_config())
    pre.save_pretrained(tmp_path)
    ctc, info = W2V2ForCTC.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["lm_head.bias", "lm_head.weight"]
    assert torch.equal(ctc.wav2vec2.encoder.layers[0].attention.q_proj.weight,
                       pre.wav2vec2.encoder.layers[0].attention.q_proj.weight)
    assert torch.isfinite(ctc.lm_head.weight).all() and ctc.lm_head.weight.abs().sum() > 0


def test_layerdrop_is_the_generators_first_draw_and_an_explicit_plan_is_followed():
    """LayerDrop's blocks come from the forward's generator (its first draw, before the masks), so a fresh generator
    fixes them; ``layer_skip`` gives them explicitly, and a skipped block gets no gradient."""
    config = tiny_config(layerdrop=0.5, num_hidden_layers=4)
    model = W2V2ForPreTraining(config).train()
    x = torch.randn(2, 4000)
    blocks = len(model.wav2vec2.encoder.layers)
    expected = (torch.rand(blocks, generator=torch.Generator().manual_seed(7)) < 0.5).tolist()
    assert model.wav2vec2.encoder.layerdrop_plan(torch.Generator().manual_seed(7)) == expected
    first = model(x, generator=torch.Generator().manual_seed(7)).loss
    generator = torch.Generator().manual_seed(7)
    torch.rand(blocks, generator=generator)  # the draw the plan would have taken
    again = model(x, generator=generator, layer_skip=expected).loss  # masks, negatives, noise from the rest
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    plan = [True, False, True, False]
    model.zero_grad()
    model(x, generator=torch.Generator().manual_seed(7), layer_skip=plan).loss.backward()
    for i, skipped in enumerate(plan):
        grads = [p.grad for p in model.wav2vec2.encoder.layers[i].parameters()]
        assert all(g is None for g in grads) == skipped, i
    assert model.eval().wav2vec2.encoder.layerdrop_plan(torch.Generator()) == [False] * blocks
