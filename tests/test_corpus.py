"""The synthetic default corpus: a tiny one is synthesised with espeak-ng, loaded back and checked."""

import filecmp
import json
import os
import re

import pytest

from hf_wav2vec2.corpus import read_phones, synth, synthesize_corpus
from hf_wav2vec2.corpus.__main__ import main
from hf_wav2vec2.data import load_speech_dataset, normalize_transcript

SIZES = (6, 2, 2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = synthesize_corpus(str(root / "a"), num_speakers=2, utterances_per_split=SIZES, seed=7, num_workers=2)
    return root, summary


def test_layout_and_loading(corpus):
    root, summary = corpus
    assert summary["skipped"] == []
    for split, count in zip(synth.SPLITS, SIZES):
        ds = load_speech_dataset(str(root / "a"), split=split)
        assert len(ds) == count == summary["splits"][split]["utterances"]
        assert sorted(set(ds["speaker_id"])) == ["101", "102"]  # the same speakers in every split
        for row in ds:
            assert re.fullmatch(r"10[12]-\d{4}-\d{4}", row["id"])
            assert re.fullmatch(r"[A-Z' ]+", row["text"]) and normalize_transcript(row["text"]) == row["text"]
            assert len(row["text"].split()) >= 5
            assert 1.0 < row["duration"] < 15.0 and row["num_samples"] == round(row["duration"] * 16000)
    texts = {s: set(load_speech_dataset(str(root / "a"), split=s)["text"]) for s in synth.SPLITS}
    assert not texts["train-clean"] & (texts["dev-clean"] | texts["test-clean"])  # held-out sentences
    info = json.loads((root / "a" / "LibriSpeech" / "corpus.json").read_text())
    assert info["espeak_ng"] and [s["voice"] for s in info["speakers"]] == list(synth.VOICES[:2])


def test_phone_timings_lie_within_the_audio(corpus):
    root, _ = corpus
    ds = load_speech_dataset(str(root / "a"), split="train-clean+dev-clean+test-clean")
    for row in ds:
        phones = read_phones(row["path"].replace(".flac", ".phones.tsv"))
        assert len(phones) > 2 * len(row["text"].split())  # at least a few phones per word
        assert phones[0][0] == 0.0 and phones[-1][1] == pytest.approx(row["duration"], abs=1e-4)
        assert all(start < end for start, end, _ in phones)
        assert all(a[1] == b[0] for a, b in zip(phones, phones[1:]))  # contiguous
        assert all(re.fullmatch(r"[A-Za-z0-9@#:!?\-*&^/<>=|\[\]{}~.$%;]+", p) for _, _, p in phones)
        assert phones[0][2] == "sil" and phones[-1][2] == "sil"
        assert sum(p != "sil" for _, _, p in phones) > len(phones) // 2


def test_same_seed_gives_identical_files_and_bad_voices_are_skipped(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    synthesize_corpus(str(tmp_path / "b"), num_speakers=2, utterances_per_split=SIZES, seed=7, num_workers=1)
    comparison = filecmp.dircmp(root / "a" / "LibriSpeech", tmp_path / "b" / "LibriSpeech")

    def assert_same(cmp):
        assert not cmp.left_only and not cmp.right_only
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files, shallow=False)
        assert not mismatch and not errors, mismatch
        for sub in cmp.subdirs.values():
            assert_same(sub)

    assert_same(comparison)
    # A voice espeak does not know: its utterances are logged and skipped, the rest of the corpus is written.
    monkeypatch.setattr(synth, "VOICES", ("en-us+m3", "xx-no-such-voice"))
    summary = synthesize_corpus(str(tmp_path / "c"), num_speakers=2, utterances_per_split=(4, 2, 2), seed=1)
    assert len(summary["skipped"]) == 4 and "unknown espeak voice" in summary["skipped"][0]["error"]
    assert len(load_speech_dataset(str(tmp_path / "c"), split="train-clean")) == 2
    with pytest.raises(FileExistsError):
        synthesize_corpus(str(tmp_path / "c"), num_speakers=1, utterances_per_split=(1, 1, 1))
    assert os.path.exists(tmp_path / "c" / "LibriSpeech" / "SPEAKERS.TXT")


def test_command_line_writes_the_corpus(corpus, tmp_path):
    root, _ = corpus
    main(["--output_dir", str(tmp_path), "--num_speakers", "2", "--utterances_per_split", "6,2,2", "--seed", "7"])
    expected = json.loads((root / "a" / "LibriSpeech" / "corpus.json").read_text())
    assert json.loads((tmp_path / "LibriSpeech" / "corpus.json").read_text()) == expected
