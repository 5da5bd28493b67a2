"""Weights that can be trusted: damaged files, weights that do not fit and mistyped local folders raise errors that
name the file or folder, instead of a NaN model, a randomly initialised one, or a Hub error. Damaged files are
written by hand."""

import json
import shutil
import struct

import pytest
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from hf_wav2vec2 import W2V2Config, W2V2ForCTC, W2V2ForPreTraining, W2V2Model


@pytest.fixture
def saved(tmp_path):
    model = W2V2ForCTC(tiny_config())
    model.save_pretrained(tmp_path / "good")
    return tmp_path / "good"


def _copy(folder, name):
    target = folder.parent / name
    shutil.copytree(folder, target)
    return target, target / "model.safetensors"


def test_damaged_safetensors_header_names_the_file(saved):
    folder, weights = _copy(saved, "bad_header")
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # inside the JSON header
    weights.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"damaged safetensors file .*bad_header/model\.safetensors"):
        W2V2ForCTC.from_pretrained(folder)
    folder, weights = _copy(saved, "truncated")
    weights.write_bytes(weights.read_bytes()[:-64])  # data shorter than the header says
    with pytest.raises(OSError, match=r"truncated/model\.safetensors"):
        W2V2ForCTC.from_pretrained(folder)


def test_damaged_safetensors_data_is_refused_not_loaded_as_nan(saved):
    folder, weights = _copy(saved, "bad_data")
    data = bytearray(weights.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    start, end = header["wav2vec2.encoder.layers.0.attention.q_proj.weight"]["data_offsets"]
    data[8 + header_len + start:8 + header_len + start + 64] = b"\xff" * 64  # fp32 0xffffffff is NaN
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad_data/model\.safetensors contain NaN or infinite values in 1 "
                                         r"tensors \(wav2vec2\.encoder\.layers\.0\.attention\.q_proj\.weight\)"):
        W2V2ForCTC.from_pretrained(folder)


def test_weights_that_do_not_fit_are_refused(saved):
    folder, weights = _copy(saved, "no_encoder")
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if ".encoder.layers." not in k}, weights)
    # 2 blocks x 16 tensors (q, k, v, out, two layer norms, two feed-forward linears; weight and bias each)
    with pytest.raises(ValueError, match=r"no_encoder/model\.safetensors do not fit W2V2ForCTC: 32 of its 49 "):
        W2V2ForCTC.from_pretrained(folder)
    folder, weights = _copy(saved, "renamed")
    save_file({k.replace("wav2vec2.", "w2v_encoder.w2v_model."): v for k, v in state.items()}, weights)
    with pytest.raises(ValueError, match=r"renamed/model\.safetensors do not fit.*fairseq names.*convert_fairseq"):
        W2V2ForCTC.from_pretrained(folder)


def test_heads_may_be_missing(saved, tmp_path):
    """What legitimately lacks weights still loads: a CTC folder into the pretraining model (no quantizer), a
    pretraining folder into CTC (no lm_head, tests/test_model.py), any folder into the base model."""
    pre, info = W2V2ForPreTraining.from_pretrained(saved, output_loading_info=True)
    assert {k.split(".")[0] for k in info["missing_keys"]} == {"quantizer", "project_q", "project_hid"}
    assert isinstance(W2V2Model.from_pretrained(saved), W2V2Model)
    no_mask = W2V2ForCTC(tiny_config(mask_time_prob=0.0))  # no masked_spec_embed in its folder
    no_mask.save_pretrained(tmp_path / "no_mask")
    W2V2ForCTC.from_pretrained(tmp_path / "no_mask", mask_time_prob=0.5)


@pytest.mark.parametrize("name", ["./typo", "runs/tinny", "runs/sub/typo", "~/no-such-model-folder-x", "my model"])
def test_missing_local_folder_is_not_a_hub_problem(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    for load in (W2V2ForCTC.from_pretrained, W2V2Config.from_pretrained):
        with pytest.raises(FileNotFoundError, match="does not exist") as error:
            load(name)
        assert "huggingface.co" not in str(error.value)
    if name == "runs/tinny":
        assert "runs/tiny" in str(error.value)  # the nearest existing names are suggested
