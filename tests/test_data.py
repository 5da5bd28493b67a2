"""Data layer: decoding, loading of every layout, bad files, max-tokens batching, the pretraining collator.

Every tree is written in tmp_path with short sine/noise files; real recordings come from shared/real_speech.
"""

import io
import logging
import os
import pathlib

import datasets
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import REAL_SPEECH, needs_real_speech

from hf_wav2vec2 import W2V2Config
from hf_wav2vec2.data import (
    AudioDataset,
    AudioError,
    MaxTokensBatchSampler,
    PretrainingCollator,
    audio_info,
    decode_audio,
    example_waveform,
    from_hf_dataset,
    load_speech_dataset,
    normalize_transcript,
    resampled_length,
)
from hf_wav2vec2.data.ctc import CTCCollator, build_processor, build_vocabulary
from hf_wav2vec2.data.text import LIBRISPEECH
from hf_wav2vec2.frames import num_frames


def write_audio(path, seconds=0.5, sr=16000, channels=1, seed=0, subtype=None, values=None):
    """A short noisy tone at ``path`` (format from the extension); returns the written (frames, channels) array."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if values is None:
        n = int(round(seconds * sr))
        t = np.arange(n) / sr
        rng = np.random.default_rng(seed)
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(n)
        values = np.stack([tone * (1.0 - 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(path, values, sr, subtype=subtype)
    return values


def make_librispeech(root, splits=("train-a", "train-b"), speakers=("11", "12"), utts=2):
    """``root/<split>/<spk>/<ch>/<spk>-<ch>-<utt>.flac`` + ``<spk>-<ch>.trans.txt``; returns {split: [ids]}."""
    ids = {}
    for s, split in enumerate(splits):
        ids[split] = []
        for speaker in speakers:
            chapter = f"{100 + s}"
            folder = os.path.join(root, split, speaker, chapter)
            lines = []
            for u in range(utts):
                utt_id = f"{speaker}-{chapter}-{u:04d}"
                write_audio(os.path.join(folder, f"{utt_id}.flac"), seconds=0.3 + 0.1 * u, seed=u)
                lines.append(f"{utt_id} Hello, world number {u}!\n")
                ids[split].append(utt_id)
            with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as handle:
                handle.writelines(lines)
    return ids


def make_libri_light(root):
    """``root/librispeech_finetuning/{1h/0..5,9h}/{clean,other}/...``, one utterance per fold and kind."""
    base = os.path.join(root, "librispeech_finetuning")
    folds = [os.path.join("1h", str(k)) for k in range(6)] + ["9h"]
    for f, fold in enumerate(folds):
        for kind, speaker in (("clean", 100 + f), ("other", 200 + f)):
            folder = os.path.join(base, fold, kind, str(speaker), "7")
            write_audio(os.path.join(folder, f"{speaker}-7-0000.flac"), seconds=0.25)
            with open(os.path.join(folder, f"{speaker}-7.trans.txt"), "w") as handle:
                handle.write(f"{speaker}-7-0000 fold {fold} {kind}\n")
    return base


# ----------------------------------------------------------------------------------------------------- decoding


@needs_real_speech
def test_decode_real_44k_stereo_flac_to_16k_mono():
    path = REAL_SPEECH / "whisper-jfk.flac"
    frames, sr, channels = audio_info(path)
    assert (sr, channels) == (44100, 2)
    waveform = decode_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == resampled_length(frames, sr, 16000)
    assert 10.5 < len(waveform) / 16000 < 11.5
    assert 0.01 < np.abs(waveform).max() <= 1.0


@needs_real_speech
def test_decode_real_22k_wav_matches_soxr():
    path = REAL_SPEECH / "ljspeech-LJ050-0131.wav"
    raw, sr = sf.read(path, dtype="float32")
    assert sr == 22050
    np.testing.assert_allclose(decode_audio(path), soxr.resample(raw, sr, 16000, quality="HQ"), atol=1e-6)


def test_stereo_is_averaged_and_44k_resampled(tmp_path):
    stereo = write_audio(str(tmp_path / "s16.wav"), seconds=0.5, channels=2)  # right = 0.5 * left
    np.testing.assert_allclose(decode_audio(tmp_path / "s16.wav"), stereo.mean(axis=1), atol=1e-4)
    write_audio(str(tmp_path / "s44.flac"), seconds=0.5, sr=44100, channels=2)
    waveform = decode_audio(tmp_path / "s44.flac")
    assert len(waveform) == resampled_length(22050, 44100, 16000) == 8000
    # The 200 Hz tone survives resampling: the spectrum peaks there.
    spectrum = np.abs(np.fft.rfft(waveform))
    assert abs(np.argmax(spectrum) * 16000 / len(waveform) - 200) < 5


@pytest.mark.parametrize("sr", [8000, 22050, 24000, 44100, 48000])
def test_resampled_length_matches_soxr(sr):
    for n in (1, 7, 399, 1000, 12345, 22051):
        assert resampled_length(n, sr, 16000) == len(soxr.resample(np.zeros(n, np.float32), sr, 16000))


def test_bytes_and_dict_sources_decode_like_the_path(tmp_path):
    path = str(tmp_path / "a.flac")
    write_audio(path, seconds=0.4, sr=22050)
    data = open(path, "rb").read()
    expected = decode_audio(path)
    np.testing.assert_array_equal(decode_audio(data), expected)
    np.testing.assert_array_equal(decode_audio({"path": "whatever.flac", "bytes": data}), expected)
    np.testing.assert_array_equal(decode_audio({"path": path, "bytes": None}), expected)
    assert audio_info(data) == audio_info(path) == (8820, 22050, 1)


def test_decode_errors_name_the_path_and_reason(tmp_path):
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all" * 64)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    nan = tmp_path / "nan.wav"
    values = np.full((1000, 1), 0.1, np.float32)
    values[500] = np.nan
    write_audio(str(nan), values=values, subtype="FLOAT")
    short = tmp_path / "short.wav"
    write_audio(str(short), seconds=0.02)  # 320 samples < 400
    stereo = tmp_path / "stereo.wav"
    write_audio(str(stereo), channels=2)
    no_frames = tmp_path / "noframes.wav"
    write_audio(str(no_frames), values=np.zeros((0, 1), np.float32))
    cases = [
        (garbage, {}, "unreadable"),
        (empty, {}, "unreadable"),
        (nan, {}, "NaN"),
        (short, {"min_samples": 400}, "too short"),
        (stereo, {"max_channels": 1}, "2 channels"),
        (no_frames, {}, "empty"),
    ]
    for path, kwargs, reason in cases:
        with pytest.raises(AudioError, match=reason) as caught:
            decode_audio(path, **kwargs)
        assert str(path) in str(caught.value) and caught.value.source == str(path)
        assert isinstance(caught.value, ValueError)
    assert len(decode_audio(short)) == 320  # by default only empty audio is too short
    with pytest.raises(AudioError, match="unreadable"):
        audio_info(garbage)


def test_normalize_transcript():
    assert normalize_transcript("And God said, Let there be light.") == "AND GOD SAID LET THERE BE LIGHT"
    assert normalize_transcript("  it’s  well-pleased\tcafé 42 ' x ") == "IT'S WELL PLEASED CAFE X"
    line = "'TWAS THE BROTHERS' O'ER THE HILL"
    assert normalize_transcript(line) == line  # LibriSpeech text is left as it is


# ------------------------------------------------------------------------------------------------------ loading


def test_librispeech_root_with_joined_splits(tmp_path):
    ids = make_librispeech(str(tmp_path / "LibriSpeech"))
    ds = load_speech_dataset(str(tmp_path / "LibriSpeech"), split="train-a+train-b")
    assert ds.column_names == ["id", "path", "text", "speaker_id", "duration", "num_samples"]
    assert sorted(ds["id"]) == sorted(ids["train-a"] + ids["train-b"])
    row = ds[ds["id"].index("12-101-0001")]
    assert row["text"] == "HELLO WORLD NUMBER"
    assert row["speaker_id"] == "12"
    assert row["duration"] == pytest.approx(0.4)
    assert row["num_samples"] == 6400 == len(decode_audio(row["path"]))
    # The folder holding LibriSpeech/ (what OpenSLR archives unpack to), and a split folder on its own.
    assert sorted(load_speech_dataset(str(tmp_path), split="train-b")["id"]) == sorted(ids["train-b"])
    assert sorted(load_speech_dataset(str(tmp_path / "LibriSpeech" / "train-a"))["id"]) == sorted(ids["train-a"])
    with pytest.raises(ValueError, match="train-a"):
        load_speech_dataset(str(tmp_path / "LibriSpeech"))
    with pytest.raises(ValueError, match="no split"):
        load_speech_dataset(str(tmp_path / "LibriSpeech"), split="train-a+nope")


def test_libri_light_subsets(tmp_path):
    root = make_libri_light(str(tmp_path))

    def speakers(subset):  # fold f of 1h has speakers 100+f (clean) and 200+f (other); 9h has 106 and 206
        return sorted(int(s) for s in load_speech_dataset(root, split=subset)["speaker_id"])

    assert speakers("10min") == [100, 200]
    assert speakers("10min:3") == [103, 203]
    assert speakers("1h") == [*range(100, 106), *range(200, 206)]
    assert speakers("9h") == [106, 206]
    assert speakers("10h") == [*range(100, 107), *range(200, 207)]
    assert load_speech_dataset(str(tmp_path), split="10h")["text"][0] == "FOLD H CLEAN"  # the parent folder works
    for bad in ("10min:6", "10min:x", "2h", None):
        with pytest.raises(ValueError):
            load_speech_dataset(root, split=bad)


def test_plain_folder_any_depth_and_format(tmp_path):
    for name in ("a.flac", "sub/b.wav", "sub/deeper/c.ogg", "d.WAV"):
        write_audio(str(tmp_path / "plain" / name), seconds=0.3)
    (tmp_path / "plain" / "notes.txt").write_text("not audio")
    ds = load_speech_dataset(str(tmp_path / "plain"))
    assert ds["id"] == ["a", "d", "sub/b", "sub/deeper/c"]
    assert set(ds["text"]) == {""} and set(ds["speaker_id"]) == {""}
    assert all(n == 4800 for n in ds["num_samples"])


def test_bad_files_are_skipped_and_reported_by_path(tmp_path, caplog):
    root = tmp_path / "corpus"
    write_audio(str(root / "good.flac"), seconds=0.5)
    (root / "garbage.flac").write_bytes(os.urandom(2000))
    (root / "empty.flac").write_bytes(b"")
    write_audio(str(root / "short.wav"), seconds=0.01)
    write_audio(str(root / "stereo.wav"), channels=2)
    write_audio(str(root / "silent.wav"), values=np.zeros((0, 1), np.float32))
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        ds, report = load_speech_dataset(str(root), max_channels=1, min_samples=400, return_report=True)
    assert ds["id"] == ["good"]
    skipped = dict(report.skipped)
    assert set(skipped) == {str(root / n) for n in ("garbage.flac", "empty.flac", "short.wav", "stereo.wav",
                                                   "silent.wav")}
    assert "too short" in skipped[str(root / "short.wav")] and "2 channels" in skipped[str(root / "stereo.wav")]
    assert "empty" in skipped[str(root / "silent.wav")]
    for path in skipped:
        assert path in caplog.text
    assert "skipped 5 unusable" in caplog.text
    # Without a channel limit the stereo file is fine (averaged to mono).
    assert "stereo" in load_speech_dataset(str(root))["id"]
    # A source with nothing usable still gives the full schema.
    nothing = load_speech_dataset(str(root / "garbage.flac"))
    assert len(nothing) == 0 and nothing.column_names == ds.column_names


def test_duration_filters_and_several_sources(tmp_path, caplog):
    make_librispeech(str(tmp_path / "ls"), splits=("s",), speakers=("5",), utts=3)  # 0.3, 0.4, 0.5 s
    for k, seconds in enumerate((0.2, 1.0)):
        write_audio(str(tmp_path / "plain" / f"{k}.wav"), seconds=seconds)
    sources = [str(tmp_path / "ls" / "s"), pathlib.Path(tmp_path / "plain")]
    assert len(load_speech_dataset(sources)) == 5
    with caplog.at_level(logging.INFO, logger="hf_wav2vec2.data"):
        ds, report = load_speech_dataset(sources, min_duration_s=0.35, max_duration_s=0.9, return_report=True)
    assert sorted(ds["duration"]) == pytest.approx([0.4, 0.5])
    assert report.dropped_by_duration == 3 and report.num_utterances == 2
    assert "dropped 3 utterance(s)" in caplog.text
    with pytest.raises(FileNotFoundError):
        load_speech_dataset("./no/such/folder")


def _hub_like_dataset(tmp_path):
    """An in-memory dataset shaped like openslr/librispeech_asr: Audio column with bytes, text, speaker_id, id."""
    good = io.BytesIO()
    sf.write(good, np.random.default_rng(0).uniform(-0.5, 0.5, 11025).astype(np.float32), 22050, format="FLAC")
    rows = {
        "audio": [{"path": "1-2-0000.flac", "bytes": good.getvalue()}, {"path": "1-2-0001.flac", "bytes": b"junk"}],
        "text": ["HELLO THERE", "BROKEN"],
        "speaker_id": [1, 1],
        "id": ["1-2-0000", "1-2-0001"],
    }
    # Built as a plain struct then cast: datasets 5 only encodes into an Audio column with torchcodec installed.
    features = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "text": datasets.Value("string"), "speaker_id": datasets.Value("int64"),
                                  "id": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features).cast_column("audio", datasets.Audio())


def test_hub_source_maps_to_the_schema_with_bytes(tmp_path, monkeypatch, caplog):
    hub = _hub_like_dataset(tmp_path)
    calls = []

    def fake_load_dataset(name, config, split=None, **kwargs):  # no network: stands in for the Hub
        calls.append((name, config, split, kwargs))
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    write_audio(str(tmp_path / "local" / "x.wav"), seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        ds, report = load_speech_dataset(["openslr/librispeech_asr", str(tmp_path / "local")], split="train.clean.100",
                                         hub_config="clean", return_report=True)
    assert calls == [("openslr/librispeech_asr", "clean", "train.clean.100", {})]
    assert ds.column_names == ["id", "path", "text", "speaker_id", "duration", "num_samples", "audio"]
    assert ds["id"] == ["1-2-0000", "x"]
    assert ds[0]["speaker_id"] == "1" and ds[0]["text"] == "HELLO THERE" and ds[0]["num_samples"] == 8000
    assert ds[0]["audio"]["bytes"][:4] == b"fLaC" and ds[0]["path"] == "1-2-0000.flac"
    assert ds[1]["audio"] == {"bytes": None, "path": str(tmp_path / "local" / "x.wav")}
    assert report.skipped[0][0] == "1-2-0001.flac" and "1-2-0001.flac" in caplog.text
    decoded = AudioDataset(ds)
    assert len(decoded[0]["input_values"]) == 8000 and len(decoded[1]["input_values"]) == 8000
    # from_hf_dataset alone, with ids made up when the dataset has none.
    alone = from_hf_dataset(hub.remove_columns("id").rename_column("audio", "speech").shuffle(seed=0), id_prefix="x",
                            audio_column="speech")
    # a dataset without a name: the any-language default (NFC, lower case), unless told otherwise
    assert alone.column_names[-1] == "audio" and [r["text"] for r in alone] == ["hello there"]
    english = from_hf_dataset(hub.remove_columns("id"), normalizer=LIBRISPEECH)
    assert [r["text"] for r in english] == ["HELLO THERE"]


# ----------------------------------------------------------------------------------------------------- batching


def test_max_tokens_batches_cover_every_index_once_and_fit():
    lengths = np.random.default_rng(0).integers(400, 50_000, size=300)
    sampler = MaxTokensBatchSampler(lengths, max_tokens=120_000, max_sample_size=40_000, seed=3)
    cropped = np.minimum(lengths, 40_000)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(300))
        assert all(len(b) * cropped[b].max() <= 120_000 for b in batches)
        # Bucketed: the spread of lengths inside a batch is small compared to the overall spread.
        assert np.mean([cropped[b].max() - cropped[b].min() for b in batches]) < 0.1 * np.ptp(cropped)
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # deterministic for a seed and epoch
    again = MaxTokensBatchSampler(lengths, max_tokens=120_000, max_sample_size=40_000, seed=3)
    again.set_epoch(2)
    assert list(again) == epochs[2]
    other_seed = MaxTokensBatchSampler(lengths, max_tokens=120_000, max_sample_size=40_000, seed=4)
    assert list(other_seed) != epochs[0]


def test_max_tokens_options_and_errors():
    lengths = [1000] * 37 + [3000] * 5
    sampler = MaxTokensBatchSampler(lengths, max_tokens=17_000, required_batch_size_multiple=8, shuffle=False)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(42))
    # Longest first when not shuffling; a batch below the multiple (5 x 3000 samples) is kept whole, as in fairseq.
    assert batches[0] == [37, 38, 39, 40, 41]
    assert [len(b) for b in batches] == [5, 16, 16, 5]
    capped = MaxTokensBatchSampler(lengths, max_tokens=10**9, max_batch_size=10)
    assert max(len(b) for b in capped) == 10 and len(capped) == 5
    with pytest.raises(ValueError, match="max_sample_size"):
        MaxTokensBatchSampler([500, 20_000], max_tokens=10_000)
    ties = MaxTokensBatchSampler([800] * 40, max_tokens=8_000, seed=0)
    assert list(ties) != (ties.set_epoch(1) or list(ties))  # equal lengths are regrouped per epoch


# -------------------------------------------------------------------------------------------------- collation


def test_collator_crops_pads_and_masks():
    rng = np.random.default_rng(0)
    examples = [{"id": f"u{k}", "input_values": rng.standard_normal(n).astype(np.float32)}
                for k, n in enumerate((3000, 1200, 800))]
    batch = PretrainingCollator(max_sample_size=2000, seed=1)(examples)
    assert batch["input_values"].shape == (3, 2000) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [2000, 1200, 800]
    assert torch.all(batch["input_values"][1, 1200:] == 0) and torch.all(batch["input_values"][2, 800:] == 0)
    np.testing.assert_array_equal(batch["input_values"][1, :1200].numpy(), examples[1]["input_values"])
    # The crop is a contiguous window of the original.
    window = batch["input_values"][0].numpy()
    start = int(np.flatnonzero(examples[0]["input_values"] == window[0])[0])
    np.testing.assert_array_equal(examples[0]["input_values"][start : start + 2000], window)
    # Reproducible per seed/epoch, different across epochs, and padded to a multiple on request.
    collator = PretrainingCollator(max_sample_size=1000, seed=5, pad_to_multiple_of=320)
    first = collator(examples)["input_values"]
    assert torch.equal(first, collator(examples)["input_values"]) and first.shape == (3, 1280)
    collator.set_epoch(1)
    assert not torch.equal(first, collator(examples)["input_values"])


def test_collator_without_padding_crops_to_the_shortest():
    examples = [{"input_values": np.arange(n, dtype=np.float32)} for n in (5000, 900, 2500)]
    batch = PretrainingCollator(pad=False)(examples)
    assert batch["input_values"].shape == (3, 900) and bool(batch["attention_mask"].all())


def test_collator_normalizes_over_real_samples():
    rng = np.random.default_rng(0)
    examples = [{"input_values": 3.0 + 0.2 * rng.standard_normal(n)} for n in (1500, 600)]
    batch = PretrainingCollator(normalize=True)(examples)
    for row, n in enumerate((1500, 600)):
        real = batch["input_values"][row, :n].double()
        assert abs(real.mean().item()) < 1e-5 and abs(real.var(unbiased=False).item() - 1) < 1e-4
        assert torch.all(batch["input_values"][row, n:] == 0)


def test_bad_examples_are_dropped_not_fatal(tmp_path, caplog):
    good = str(tmp_path / "good.wav")
    write_audio(good, seconds=0.25)
    nan = str(tmp_path / "nan.wav")
    values = np.full((2000, 1), 0.1, np.float32)
    values[7] = np.inf
    write_audio(nan, values=values, subtype="FLOAT")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"RIFF" + os.urandom(500))
    collator = PretrainingCollator(max_sample_size=16000, min_samples=400)
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        batch = collator([{"id": "a", "path": good}, {"id": "b", "path": nan}, None,
                          {"id": "c", "path": str(garbage)}, {"id": "d", "input_values": np.zeros(100)}])
        assert batch["input_values"].shape == (1, 4000)
        assert nan in caplog.text and str(garbage) in caplog.text and "too short" in caplog.text
        assert collator([{"path": nan}, None]) is None
    hf = datasets.Dataset.from_dict({"id": ["good", "nan"], "path": [good, nan], "text": ["HI", ""]})
    decoded = AudioDataset(hf)
    assert decoded[0]["text"] == "HI" and decoded[0]["input_values"].shape == (4000,) and decoded[1] is None


def test_example_waveform_takes_input_values_or_decodes(tmp_path):
    path = str(tmp_path / "a.flac")
    write_audio(path, seconds=0.3, sr=22050)
    np.testing.assert_array_equal(example_waveform({"path": path}), decode_audio(path))
    given = example_waveform({"input_values": torch.linspace(-1, 1, 500, dtype=torch.float64), "path": path})
    assert given.dtype == np.float32 and given.shape == (500,)  # input_values win over the path
    for example, reason in (({"id": "u1", "input_values": np.array([0.1, np.nan] * 300)}, "NaN"),
                            ({"id": "u2", "input_values": np.zeros(399)}, "too short"),
                            ({"input_values": np.zeros(0)}, "too short")):
        with pytest.raises(AudioError, match=reason) as caught:
            example_waveform(example, min_samples=400 if "id" in example else 1)
        assert caught.value.source == example.get("id", "<example>")


def test_both_collators_return_none_when_no_example_is_usable(tmp_path, caplog):
    config = W2V2Config.base()
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio" * 100)
    bad = [
        None,  # AudioDataset's undecodable file
        {"id": "garbage", "path": str(garbage), "text": "A"},
        {"id": "nan", "input_values": np.array([0.1, np.inf] * 500, np.float32), "text": "A"},
        {"id": "empty", "input_values": np.zeros(0, np.float32), "text": "A"},
    ]
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        assert PretrainingCollator()(bad) is None
        # CTC also drops, through the frame arithmetic, audio too short for one frame (min_samples left at 1).
        short = {"id": "short", "input_values": np.zeros(config.receptive_field - 1, np.float32), "text": "A"}
        ctc = CTCCollator(build_processor(build_vocabulary(["A CAB"])),
                          lambda n: num_frames(n, config.conv_kernel, config.conv_stride))
        assert ctc([*bad, short]) is None
    assert ctc.report.empty_batches == 1 and dict(ctc.report.dropped) == {"audio": 4, "infeasible": 1}
    assert str(garbage) in caplog.text and "nan: contains NaN" in caplog.text
    # The receptive field as min_samples drops it as too short in the pretraining collator too.
    assert PretrainingCollator(min_samples=config.receptive_field)([short]) is None
    assert PretrainingCollator()([short])["input_values"].shape == (1, config.receptive_field - 1)


def test_dataloader_end_to_end(tmp_path):
    make_librispeech(str(tmp_path), splits=("train",), speakers=("1", "2", "3"), utts=4)
    ds = load_speech_dataset(str(tmp_path), split="train")
    sampler = MaxTokensBatchSampler(ds["num_samples"], max_tokens=30_000, max_sample_size=6000, seed=0)
    loader = torch.utils.data.DataLoader(AudioDataset(ds), batch_sampler=sampler,
                                         collate_fn=PretrainingCollator(max_sample_size=6000, normalize=True))
    seen = 0
    for batch in loader:
        assert batch["input_values"].numel() <= 30_000
        assert batch["attention_mask"].shape == batch["input_values"].shape
        seen += batch["input_values"].shape[0]
    assert seen == len(ds) == 12
