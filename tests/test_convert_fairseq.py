"""fairseq checkpoints in: tiny fairseq models (tests/fixtures/make_fairseq_fixtures.py, written with fairseq-fixed
0.12.3.1) converted without fairseq give fairseq's own stored outputs (the oracle), and bad checkpoints are refused
with the file's name."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor

from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.convert_fairseq import convert_fairseq_checkpoint, main, read_fairseq_dictionary
from hf_wav2vec2.losses import contrastive_logits

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OUTPUTS = torch.load(FIXTURES / "fairseq_outputs.pt")
ATOL = 1e-5


@pytest.mark.parametrize("name, norm, pre_ln", [("base", "group", False), ("large", "layer", True)])
def test_pretraining_checkpoint_matches_fairseq(name, norm, pre_ln, tmp_path):
    expected = OUTPUTS[name]
    main(["--checkpoint", str(FIXTURES / f"fairseq_{name}_tiny.pt"), "--output_dir", str(tmp_path / name)])
    model = W2V2ForPreTraining.from_pretrained(tmp_path / name).eval()  # through the saved folder
    cfg = model.config
    assert (cfg.feat_extract_norm, cfg.do_stable_layer_norm, cfg.conv_bias) == (norm, pre_ln, pre_ln)
    audio = OUTPUTS["audio"]
    with torch.no_grad():
        out = model.wav2vec2(audio)
        torch.testing.assert_close(out.last_hidden_state, expected["encoder_out"], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.extract_features, expected["features"], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.feature_penalty, expected["features_pen"], atol=ATOL, rtol=1e-5)
        b, t, c = out.extract_features.shape
        quantized = model.quantizer(out.extract_features.reshape(b * t, c))  # eval: argmax codes
        assert torch.equal(quantized.chosen_ids.reshape(b, t, -1), expected["code_ids"])
        torch.testing.assert_close(quantized.codevectors.reshape(b, t, -1), expected["codevectors"], atol=ATOL,
                                   rtol=0)
        torch.testing.assert_close(quantized.prob_perplexity, expected["prob_perplexity"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(quantized.code_perplexity, expected["code_perplexity"], atol=1e-4, rtol=1e-5)
        targets = model.project_q(quantized.codevectors)  # (B*T, D)
        context = model.project_hid(out.last_hidden_state).reshape(b * t, -1)
        torch.testing.assert_close(targets.reshape(b, t, -1), expected["projected_quantized"], atol=ATOL, rtol=0)
        torch.testing.assert_close(context.reshape(b, t, -1), expected["projected_context"], atol=ATOL, rtol=0)
        # contrastive logits (eq. 3) for fairseq's pinned negatives, every frame treated as masked
        index = expected["negative_index"]  # (T, K) frames of the same utterance
        rows = (index[None] + (torch.arange(b) * t)[:, None, None]).reshape(b * t, -1)  # (B*T, K)
        codes = quantized.chosen_ids
        same_code = (codes[rows] == codes[:, None, :]).all(-1)
        logits = contrastive_logits(context, targets, rows, same_code, cfg.contrastive_logits_temperature)
        reference = expected["contrastive_logits"].permute(1, 2, 0).reshape(b * t, -1)  # (1+K, B, T) -> (B*T, 1+K)
        assert torch.equal(torch.isinf(logits), torch.isinf(reference)) and torch.isinf(reference).any()
        finite = torch.isfinite(reference)
        torch.testing.assert_close(logits[finite].float(), reference[finite], atol=1e-4, rtol=0)


def test_config_fields_come_from_the_checkpoint(tmp_path):
    base = convert_fairseq_checkpoint(FIXTURES / "fairseq_base_tiny.pt", tmp_path / "base").config  # legacy args
    assert (base.conv_dim, base.conv_kernel, base.conv_stride) == ((24, 24, 24), (10, 3, 3), (5, 2, 2))
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        32, 2, 2, 64)
    assert (base.codevector_dim, base.proj_codevector_dim, base.num_codevectors_per_group) == (16, 16, 8)
    assert (base.feature_grad_mult, base.diversity_loss_weight, base.feature_penalty_weight) == (0.1, 0.1, 10.0)
    assert base.gumbel_temperature_end == 0.5
    assert not json.loads((tmp_path / "base" / "preprocessor_config.json").read_text())["do_normalize"]
    large = convert_fairseq_checkpoint(FIXTURES / "fairseq_large_tiny.pt", tmp_path / "large").config  # cfg dict
    assert (large.codevector_dim, large.proj_codevector_dim) == (12, 16)  # latent_dim != final_dim
    assert (large.feature_penalty_weight, large.gumbel_temperature_end) == (0.0, 0.1)
    assert json.loads((tmp_path / "large" / "preprocessor_config.json").read_text())["do_normalize"]


def test_ctc_checkpoint_matches_fairseq_logits_and_letters(tmp_path):
    expected = OUTPUTS["ctc"]
    main(["--checkpoint", str(FIXTURES / "fairseq_ctc_tiny.pt"), "--dict", str(FIXTURES / "fairseq_dict.ltr.txt"),
          "--output_dir", str(tmp_path / "ctc")])
    model = W2V2ForCTC.from_pretrained(tmp_path / "ctc").eval()
    cfg = model.config
    assert (cfg.vocab_size, cfg.pad_token_id) == (14, 0)
    # the fine-tuning fields override the pretraining ones, as fairseq's Wav2VecEncoder does
    assert (cfg.mask_time_prob, cfg.mask_feature_prob, cfg.mask_feature_length, cfg.layerdrop) == (0.5, 0.25, 8, 0.05)
    assert (cfg.final_dropout, cfg.freeze_finetune_updates, cfg.hidden_dropout) == (0.1, 100, 0.0)
    with torch.no_grad():
        logits = model(OUTPUTS["audio"]).logits
    torch.testing.assert_close(logits, expected["logits"], atol=ATOL, rtol=0)
    processor = AutoProcessor.from_pretrained(tmp_path / "ctc")
    vocab = processor.tokenizer.get_vocab()
    assert vocab["<pad>"] == 0 and processor.tokenizer.pad_token_id == 0  # fairseq's blank <s> is id 0
    # every other id keeps fairseq's symbol: <s> <-> <pad> swap names only
    assert [processor.tokenizer.convert_ids_to_tokens(i) for i in range(4, 14)] == expected["symbols"][4:]
    texts = processor.batch_decode(logits.argmax(-1))
    assert texts == expected["transcripts"] and any(" " in t for t in texts)


def test_bad_checkpoints_are_refused_with_their_name(tmp_path):
    state = torch.load(FIXTURES / "fairseq_large_tiny.pt", weights_only=True)
    # an object weights_only refuses (here: a set subclass defined in this test module)
    evil = tmp_path / "evil.pt"
    torch.save({**state, "extra_state": {"x": Unpicklable()}}, evil)
    with pytest.raises(ValueError, match=r"evil\.pt.*weights_only=True.*--trust_pickle"):
        convert_fairseq_checkpoint(evil, tmp_path / "out")
    unsupported = tmp_path / "conformer.pt"
    torch.save({**state, "cfg": {**state["cfg"], "model": {**state["cfg"]["model"], "layer_type": "conformer"}}},
               unsupported)
    with pytest.raises(ValueError, match=r"conformer\.pt: layer_type='conformer' is not supported"):
        convert_fairseq_checkpoint(unsupported, tmp_path / "out")
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "model": {k: v for k, v in state["model"].items() if "fc1" not in k}}, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pt: the weights do not match.*missing.*intermediate_dense"):
        convert_fairseq_checkpoint(wrong, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        convert_fairseq_checkpoint(tmp_path / "nothing.pt", tmp_path / "out")
    code = tmp_path / "code.pt"
    torch.save({**state, "cfg": {**state["cfg"], "model": {**state["cfg"]["model"],
                                                           "conv_feature_layers": "__import__('os')"}}}, code)
    with pytest.raises(ValueError, match=r"code\.pt: cannot read conv_feature_layers"):
        convert_fairseq_checkpoint(code, tmp_path / "out")
    # a dictionary of another size than the CTC projection
    small = tmp_path / "dict.ltr.txt"
    small.write_text("| 5\nE 4\n")
    with pytest.raises(ValueError, match=r"dict\.ltr\.txt gives 2 symbols.*14 outputs"):
        convert_fairseq_checkpoint(FIXTURES / "fairseq_ctc_tiny.pt", tmp_path / "out", small)
    assert read_fairseq_dictionary(FIXTURES / "fairseq_dict.ltr.txt")[:3] == ["|", "E", "T"]


def test_fairseq_weights_in_a_folder_are_refused_not_randomly_initialised(tmp_path):
    """The failure this replaces: fairseq names in model.safetensors loaded "fine" into a random model."""
    from safetensors.torch import save_file

    folder = tmp_path / "fairseq_named"
    model = convert_fairseq_checkpoint(FIXTURES / "fairseq_base_tiny.pt", folder)
    with torch.serialization.safe_globals([argparse.Namespace]):  # its legacy `args` Namespace
        state = torch.load(FIXTURES / "fairseq_base_tiny.pt", weights_only=True)
    save_file({k: v.contiguous() for k, v in state["model"].items()}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"fairseq_named/model\.safetensors do not fit W2V2ForPreTraining.*"
                                         r"convert_fairseq"):
        W2V2ForPreTraining.from_pretrained(folder)
    assert isinstance(model, W2V2ForPreTraining)


class Unpicklable(set):
    pass
