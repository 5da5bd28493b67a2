"""The codebook analysis (paper Figure 3): metrics on hand-made counts with known answers, the frame-to-phone
alignment, the model's code ids against transformers' quantizer, and the command end to end."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config, tiny_hf_config
from transformers import Wav2Vec2ForPreTraining

from hf_wav2vec2 import W2V2ForPreTraining
from hf_wav2vec2.analysis import codebook
from hf_wav2vec2.frames import receptive_field


def test_codes_that_equal_phones_give_purity_and_pnmi_one():
    phones = ["a", "b", "c", "a", "a", "b"]
    codes = [{"a": (0, 1), "b": (2, 3), "c": (4, 5)}[p] for p in phones]
    metrics = codebook.codebook_metrics(codebook.cooccurrence(codes, phones)[2])
    assert metrics["phone_purity"] == 1.0 and math.isclose(metrics["pnmi"], 1.0)
    assert metrics["codes_used"] == 3 and metrics["frames"] == 6
    assert math.isclose(metrics["code_entropy"], metrics["phone_entropy"])


def test_independent_codes_give_pnmi_zero():
    counts = np.outer([3, 1, 2], [5, 2, 1, 4])  # n(code, phone) = n(code) n(phone): independent
    metrics = codebook.codebook_metrics(counts)
    assert metrics["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["phone_purity"] == pytest.approx(5 / 12)  # every code's best phone is the commonest phone


def test_metrics_by_hand():
    # joint [[3, 1], [1, 3]] / 8, uniform marginals: I = 2 * 3/8 log2(3/2) + 2 * 1/8 log2(1/2), H(phone) = 1 bit
    metrics = codebook.codebook_metrics(np.array([[3, 1], [1, 3]]))
    assert metrics["pnmi"] == pytest.approx(0.75 * math.log2(1.5) - 0.25)
    assert metrics["phone_purity"] == 0.75 and metrics["code_entropy"] == pytest.approx(1.0)
    assert metrics["mi_bias_bits"] == pytest.approx(1 * 1 / (2 * 8 * math.log(2)))  # Miller-Madow, (C-1)(P-1)/2N
    with pytest.raises(ValueError, match="same phone"):
        codebook.codebook_metrics(np.array([[2], [3]]))


def test_frame_phones_use_the_centre_of_each_receptive_field():
    kernel, stride = (10, 3, 3), (5, 2, 2)
    field = receptive_field(kernel, stride)  # 10 + 2*5 + 2*10 = 40 samples, hop 20
    centres = codebook.frame_centres(3, kernel, stride, 1000)
    np.testing.assert_allclose(centres, (np.arange(3) * 20 + (field - 1) / 2) / 1000)  # 19.5, 39.5, 59.5 ms
    intervals = [(0.0, 0.02, "sil"), (0.02, 0.05, "a"), (0.07, 0.08, "b")]
    assert codebook.frame_phones(intervals, np.array([0.0195, 0.0395, 0.0595, 0.075, 0.09])) == \
        ["sil", "a", None, "b", None]


def test_code_ids_match_transformers_quantizer_choice(tmp_path):
    """Our per-frame code ids equal the argmax of transformers' quantizer logits on its own extract_features, and a
    padded batch gives each item's own codes with -1 on padding."""
    hf = Wav2Vec2ForPreTraining(tiny_hf_config()).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = W2V2ForPreTraining.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(2, 4000)
    with torch.no_grad():
        extract = hf.wav2vec2(x).extract_features  # (B, T, C)
        logits = hf.quantizer.weight_proj(extract).view(2, extract.shape[1], 2, 8)
        codes = ours.code_ids(x)
    assert torch.equal(codes, logits.argmax(-1))
    short = x[1, :2500]
    padded = torch.stack([x[0], torch.cat([short, torch.zeros(1500)])])
    mask = torch.tensor([[1] * 4000, [1] * 2500 + [0] * 1500])
    with torch.no_grad():
        batch = ours.code_ids(padded, mask)
        alone = ours.code_ids(short[None])[0]
    frames = alone.shape[0]
    assert torch.equal(batch[0], codes[0]) and torch.equal(batch[1, :frames], alone)
    assert (batch[1, frames:] == -1).all()


def _aligned_folder(root, rng):
    """A split folder with three 0.5 s files; each alternates a 220 Hz tone ("a") and noise ("s") every 0.1 s."""
    chapter = root / "1" / "2"
    chapter.mkdir(parents=True)
    t = np.arange(8000) / 16000
    for i in range(3):
        tone, noise = 0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * rng.standard_normal(8000)
        piece = (np.arange(8000) // 1600) % 2 == 0
        sf.write(chapter / f"1-2-{i:04d}.flac", np.where(piece, tone, noise), 16000)
        rows = [f"{k / 10:.1f}\t{(k + 1) / 10:.1f}\t{'a' if k % 2 == 0 else 's'}" for k in range(5)]
        (chapter / f"1-2-{i:04d}.phones.tsv").write_text("\n".join(rows) + "\n")
    (chapter / "1-2.trans.txt").write_text("".join(f"1-2-{i:04d} A\n" for i in range(3)))


def test_command_writes_metrics_and_figure(tmp_path):
    _aligned_folder(tmp_path / "data", np.random.default_rng(0))
    W2V2ForPreTraining(tiny_config()).save_pretrained(tmp_path / "model")
    result = codebook.main(["--model", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "data"),
                            "--output_dir", str(tmp_path / "out"), "--top_codes", "10"])
    saved = json.loads((tmp_path / "out" / "codebook.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["utterances"] == 3 and saved["phones"] == 2 and 0 <= saved["pnmi"] <= 1
    assert len(saved["codebooks"]) == 2 and saved["codebooks"][0]["codes_used"] <= 8  # tiny: 2 codebooks of 8
    assert saved["pnmi_per_codebook"] == pytest.approx(np.mean([m["pnmi"] for m in saved["codebooks"]]))
    assert saved["frames"] + saved["unaligned_frames"] == 3 * ((8000 - 40) // 20 + 1)  # field 40, hop 20
    assert (tmp_path / "out" / "p_phone_given_code.png").stat().st_size > 1000
    random = codebook.main(["--model", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "data"),
                            "--output_dir", str(tmp_path / "random"), "--random_init", "--seed", "3"])
    assert random["weights"] == "random (seed 3)" and random["frames"] == saved["frames"]


def test_command_without_alignments_says_what_is_expected(tmp_path):
    _aligned_folder(tmp_path / "data", np.random.default_rng(0))
    for tsv in (tmp_path / "data").rglob("*.phones.tsv"):
        tsv.unlink()
    W2V2ForPreTraining(tiny_config()).save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=r"phones\.tsv"):
        codebook.main(["--model", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "data"),
                       "--output_dir", str(tmp_path / "out")])
