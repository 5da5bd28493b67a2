"""Libri-light-style labelled subsets of a training split (hf_wav2vec2.corpus.subsets): fold durations, disjoint and
speaker-balanced folds, nothing from other splits, and the written tree read back by the data layer."""

from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from hf_wav2vec2.corpus.subsets import choose_folds, write_finetuning_subsets
from hf_wav2vec2.data import load_speech_dataset


def _corpus(root, rng):
    """LibriSpeech/{train-clean,dev-clean}: 3 speakers x 8 utterances of 0.8-1.4 s in train, 2 in dev."""
    durations = {}
    for split, count in (("train-clean", 8), ("dev-clean", 2)):
        for speaker in (11, 22, 33):
            chapter = root / "LibriSpeech" / split / str(speaker) / "5"
            chapter.mkdir(parents=True)
            lines = []
            for i in range(count):
                utt = f"{speaker}-5-{i:04d}" if split == "train-clean" else f"{speaker}-5-{100 + i:04d}"
                seconds = rng.uniform(0.8, 1.4)
                sf.write(chapter / f"{utt}.flac", 0.1 * rng.standard_normal(round(seconds * 16000)), 16000)
                lines.append(f"{utt} WORD\n")
                durations[utt] = round(seconds * 16000) / 16000
            (chapter / f"{speaker}-5.trans.txt").write_text("".join(lines))
    return durations


def test_folds_are_disjoint_balanced_and_long_enough(tmp_path):
    durations = _corpus(tmp_path, np.random.default_rng(0))
    summary = write_finetuning_subsets(tmp_path / "LibriSpeech" / "train-clean", tmp_path / "ft", fold_minutes=0.05)
    root = tmp_path / "ft" / "librispeech_finetuning"
    folds = [load_speech_dataset(str(root), split=f"10min:{k}") for k in range(6)]
    ids = [set(fold["id"]) for fold in folds]
    assert sum(map(len, ids)) == len(set().union(*ids))  # disjoint
    assert all(utt.split("-")[2] < "0100" for fold in ids for utt in fold)  # train utterances only, never dev
    for fold, fold_ids in zip(summary["folds"], ids):
        seconds = sum(durations[utt] for utt in fold_ids)
        assert 3.0 <= seconds < 3.0 + 1.4  # at least fold_minutes, overshoot below one utterance
        assert fold["minutes"] == pytest.approx(seconds / 60, abs=1e-6) and fold["utterances"] == len(fold_ids)
        per_speaker = Counter(utt.split("-")[0] for utt in fold_ids)
        assert max(per_speaker.values()) - min(per_speaker.values()) <= 1 and len(per_speaker) == 3
    one_hour = load_speech_dataset(str(root), split="1h")
    assert set(one_hour["id"]) == set().union(*ids)
    assert set(load_speech_dataset(str(root), split="10min")["id"]) == ids[0]
    assert all(text == "WORD" for text in one_hour["text"])  # transcripts follow their audio


def test_too_little_audio_is_refused():
    rows = [{"id": f"1-1-{i}", "speaker_id": "1", "duration": 10.0} for i in range(30)]  # 5 minutes
    with pytest.raises(ValueError, match="need 60.0 min of audio, the split has 5.0 min"):
        choose_folds(rows)
    folds = choose_folds(rows, fold_minutes=0.5)
    assert [len(fold) for fold in folds] == [3] * 6
