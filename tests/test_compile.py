"""torch.compile: the stages that ``W2V2PreTrainedModel.compile_stages`` compiles trace as single graphs in training
(gradients, dropout, padding, LayerDrop configured), and a compiled train step computes what the eager one does.

CI-safe: no C++ compiler needed (``torch._dynamo.explain`` and the ``aot_eager`` backend, never inductor).
"""

import copy

import pytest
import torch
import torch._dynamo
from conftest import tiny_config
from torch._dynamo.utils import counters

from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.frames import frame_mask
from hf_wav2vec2.masking import compute_span_mask, sample_negatives

# Everything that changes the traced code in training: dropout, LayerDrop, a padded batch. No activation dropout, as
# in the paper's pretraining: the feed-forward then runs the memory-saving kernels_recompute.activate_then_linear.
TRAINING = dict(hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
                layerdrop=0.3, num_hidden_layers=3)


def _padded_batch(samples=(2400, 1700)):
    """(B, L) audio and its (B, L) attention mask, the second item padded."""
    x = torch.randn(len(samples), max(samples))
    attention_mask = (torch.arange(max(samples))[None, :] < torch.tensor(samples)[:, None]).long()
    return x * attention_mask, attention_mask


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs_and_breaks(fn, *args):
    explanation = torch._dynamo.explain(fn)(*args)
    reasons = [str(r.reason).splitlines()[0] for r in explanation.break_reasons]
    return explanation.graph_count, explanation.graph_break_count, reasons


def test_compiled_stages_trace_as_one_graph_each_in_training(variant):
    """Feature encoder (padding: the group norm's real-frame statistics), projection, positional conv and a
    Transformer block (key mask, attention dropout, with and without activation dropout): one graph, no break,
    with gradients in train mode."""
    model = W2V2ForPreTraining(tiny_config(variant, **TRAINING)).train()
    base = model.wav2vec2
    x, attention_mask = _padded_batch()
    lengths = attention_mask.sum(-1)
    features = base.feature_extractor(x, lengths)  # (B, T, C)
    t = features.shape[1]
    valid = frame_mask(model.num_frames(lengths), t)
    hidden = torch.randn(2, t, model.config.hidden_size, requires_grad=True)
    key_mask = valid[:, None, None, :]
    stages = {
        "feature_extractor": (base.feature_extractor, x, lengths),
        "feature_projection": (base.feature_projection, features.detach().requires_grad_()),
        "pos_conv_embed": (base.encoder.pos_conv_embed, hidden),
        "encoder_layer": (base.encoder.layers[0], hidden, key_mask),
    }
    for name, (stage, *args) in stages.items():
        torch._dynamo.reset()
        assert _graphs_and_breaks(stage, *args) == (1, 0, []), name
    base.encoder.layers[0].feed_forward.intermediate_dropout.p = 0.1  # the other feed-forward path
    torch._dynamo.reset()
    assert _graphs_and_breaks(base.encoder.layers[0], hidden, key_mask) == (1, 0, [])


def test_encoder_without_layerdrop_traces_as_one_graph():
    """The whole context network is one graph when no LayerDrop draw is needed (the draw is what keeps its loop
    eager under compile_stages)."""
    model = W2V2ForPreTraining(tiny_config(**{**TRAINING, "layerdrop": 0.0})).train()
    hidden = torch.randn(2, 9, model.config.hidden_size, requires_grad=True)
    valid = torch.arange(9)[None, :] < torch.tensor([9, 6])[:, None]
    assert _graphs_and_breaks(model.wav2vec2.encoder, hidden, valid) == (1, 0, [])


def test_compiled_pretraining_step_equals_eager():
    """Same weights, masks, negatives, LayerDrop blocks and RNG state: the compiled step's loss and every gradient
    equal eager's (dropout and the Gumbel noise draw from the global RNG in the same order); state_dict keys are
    unchanged; the Transformer blocks share one compiled graph."""
    torch.manual_seed(0)
    eager = W2V2ForPreTraining(tiny_config("layer_preln", **TRAINING)).train()
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    assert compiled.compile_stages(backend="aot_eager") is compiled
    assert list(compiled.state_dict()) == keys

    x, attention_mask = _padded_batch()
    frame_lengths = eager.num_frames(attention_mask.sum(-1))
    t = int(eager.num_frames(x.shape[1]))
    generator = torch.Generator().manual_seed(1)
    mask = compute_span_mask(frame_lengths, t, 0.65, 4, 2, require_same_masks=True, generator=generator)
    negatives = sample_negatives(mask, eager.config.num_negatives, generator)
    results = []
    for model in (eager, compiled):
        torch.manual_seed(3)
        out = model(x, attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives,
                    layer_skip=[False, True, False])
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        results.append((out.loss.detach(), grads))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    assert [n for n, g in grads_c.items() if g is None] == [n for n, g in grads_e.items() if g is None]
    assert any(g is None for g in grads_e.values())  # the block LayerDrop skipped: no gradient, in both
    for name, g in grads_e.items():
        if g is not None:
            # compiled: torch's convolution; eager: matrix products (conv1d_channels_last), another fp32 order
            assert torch.allclose(grads_c[name], g, rtol=1e-4, atol=max(1e-6, 2e-6 * g.abs().max().item())), name
    # feature encoder, projection, positional conv, one graph for the three blocks
    assert counters["stats"]["unique_graphs"] == 4


def test_compile_stages_keeps_the_checkpoint_format(tmp_path):
    """A compiled CTC model saves the same keys as an uncompiled one and loads back into an eager one."""
    torch.manual_seed(0)
    model = W2V2ForCTC(tiny_config()).eval()
    reference = model.state_dict()
    model.compile_stages(backend="eager")
    model.save_pretrained(tmp_path)
    loaded = W2V2ForCTC.from_pretrained(tmp_path).eval()
    assert list(loaded.state_dict()) == list(reference)
    x, attention_mask = _padded_batch()
    with torch.no_grad():
        compiled, eager = model(x, attention_mask), loaded(x, attention_mask)
    # compiled: torch's convolutions; eager: matrix products and an FFT (ops), another fp32 order. Over the real
    # frames only: a padded frame's features are near zero, and its layer norms amplify that rounding to 1e-3.
    for i, frames in enumerate(eager.frame_lengths.tolist()):
        assert torch.allclose(compiled.logits[i, :frames], eager.logits[i, :frames], atol=1e-5)
