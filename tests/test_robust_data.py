"""Hostile inputs to the data and inference paths: symlink loops, transcripts in other encodings, absurd sample
values, missing files and folders, long files in evaluation, and one bad file among good ones in transcribe.py."""

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

from hf_wav2vec2 import W2V2ForCTC
from hf_wav2vec2.cli import evaluate_ctc, transcribe
from hf_wav2vec2.data import AudioDataset, AudioError, audio_info, decode_audio, example_waveform, load_speech_dataset
from hf_wav2vec2.data.audio import MAX_ABS_AMPLITUDE
from hf_wav2vec2.decoding import greedy_decode
from hf_wav2vec2.evaluation import transcribe_dataset
from hf_wav2vec2.pipeline import asr_pipeline

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def noise(path, seconds=0.2, sr=16000, seed=0, scale=0.1, subtype=None):
    rng = np.random.default_rng(seed)
    sf.write(path, (scale * rng.standard_normal(int(sr * seconds))).astype(np.float32), sr, subtype=subtype)
    return path


def chapter(root, texts: dict[str, str], seconds=0.2):
    """``root/7/11/<id>.flac`` for every id of ``texts``; the caller writes the transcript file."""
    folder = root / "7" / "11"
    folder.mkdir(parents=True, exist_ok=True)
    for i, utt in enumerate(texts):
        noise(folder / f"{utt}.flac", seconds=seconds, seed=i)
    return folder


TEXTS = {"7-11-0000": "CAFÉ AU LAIT", "7-11-0001": "THE CAT SAT", "7-11-0002": "A CAB"}


# ------------------------------------------------------------------------------------------------ folders
def test_symlink_loop_reads_each_real_file_once(tmp_path, caplog):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(10):
        noise(folder / f"{i}.wav", seed=i)
    os.symlink(folder, folder / "loop")  # audio/loop -> audio
    os.symlink(folder / "3.wav", folder / "again.wav")  # the same real file under a second name
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        dataset = load_speech_dataset(str(folder))
    assert sorted(dataset["id"]) == sorted(str(i) for i in range(10))
    assert "loop" in caplog.text and str(folder / "loop") in caplog.text


def test_mistyped_local_folders_are_missing_folders_not_hub_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    # "data/corpsu" has the form of a Hub name ("owner/name"), but data/ is a folder here: a typo, not the Hub
    for source in ("data/corpsu", "./corpus", "data/corpus/LibriSpeech", "corpus/"):
        with pytest.raises(FileNotFoundError, match=f"no such folder: {source}"):
            load_speech_dataset(source)


def test_missing_and_wrong_kind_of_audio_path_say_so(tmp_path):
    missing = tmp_path / "nope.wav"
    for read in (decode_audio, audio_info):
        with pytest.raises(AudioError, match="no such file") as caught:
            read(missing)
        assert caught.value.source == str(missing) and "System error" not in str(caught.value)
        with pytest.raises(AudioError, match="is a folder"):
            read(tmp_path)


# -------------------------------------------------------------------------------------------- transcripts
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_transcripts_with_a_byte_order_mark(tmp_path, encoding):
    folder = chapter(tmp_path, TEXTS)
    (folder / "7-11.trans.txt").write_bytes("".join(f"{u} {t}\n" for u, t in TEXTS.items()).encode(encoding))
    dataset = load_speech_dataset(str(tmp_path))
    assert dict(zip(dataset["id"], dataset["text"])) == {**TEXTS, "7-11-0000": "CAFE AU LAIT"}


def test_transcripts_not_in_utf8_are_read_as_windows_1252_and_named(tmp_path, caplog):
    folder = chapter(tmp_path, TEXTS)
    lines = [f"{u} {t}\n" for u, t in TEXTS.items()]
    lines[1] = "7-11-0001 THE CAT\u2019S HAT\n"  # byte 0x92 in cp1252, as Windows editors write it
    (folder / "7-11.trans.txt").write_bytes("".join(lines).encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        dataset = load_speech_dataset(str(tmp_path))
    texts = dict(zip(dataset["id"], dataset["text"]))
    assert texts == {"7-11-0000": "CAFE AU LAIT", "7-11-0001": "THE CAT'S HAT", "7-11-0002": "A CAB"}
    assert str(folder / "7-11.trans.txt") in caplog.text and "line 1" in caplog.text  # é is the first bad byte


# ------------------------------------------------------------------------------------------------- samples
def test_absurd_magnitudes_are_rejected_by_file(tmp_path, caplog):
    huge = noise(tmp_path / "huge.wav", scale=1e30, subtype="FLOAT")  # finite in float32, yet not audio
    int_scale = noise(tmp_path / "int_scale.wav", scale=3000.0, subtype="FLOAT")  # 16-bit integer scale: kept
    with pytest.raises(AudioError, match="peak magnitude") as caught:
        decode_audio(huge)
    assert caught.value.source == str(huge)
    assert np.abs(decode_audio(int_scale)).max() <= MAX_ABS_AMPLITUDE
    with pytest.raises(AudioError, match="peak magnitude"):
        example_waveform({"id": "u1", "input_values": np.full(800, 1e20, np.float32)})
    # what training and evaluation read: the file is dropped and named, the others decode
    dataset = load_speech_dataset(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        items = [AudioDataset(dataset)[i] for i in range(len(dataset))]
    assert [item is None for item in items] == [path == str(huge) for path in dataset["path"]]
    assert str(huge) in caplog.text


# ------------------------------------------------------------------------------------ evaluation, transcribe.py
def make_tokenizer(folder):
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, "'": 3, **{c: 4 + i for i, c in enumerate(LETTERS)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                word_delimiter_token="|", bos_token=None, eos_token=None)


@pytest.fixture(scope="module")
def frame_local_model(tmp_path_factory):
    """A tiny model (20-sample hop) whose logits at a frame depend only on the audio within +-10 frames (layer-norm
    conv encoder, attention output projections zeroed, positional conv of 16 frames, no waveform normalisation):
    chunks with strides of more than 10 frames see what one pass sees, so chunked == one pass exactly."""
    torch.manual_seed(3)
    root = tmp_path_factory.mktemp("robust_model")
    tokenizer = make_tokenizer(root)
    model = W2V2ForCTC(tiny_config("layer_preln", vocab_size=len(tokenizer))).eval()
    with torch.no_grad():
        for layer in model.wav2vec2.encoder.layers:
            layer.attention.out_proj.weight.zero_()
    processor = Wav2Vec2Processor(tokenizer=tokenizer, feature_extractor=Wav2Vec2FeatureExtractor(
        do_normalize=False, return_attention_mask=True))
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model", model, processor


def test_long_utterances_are_chunked_in_evaluation(frame_local_model, tmp_path):
    folder, model, processor = frame_local_model
    texts = {"7-11-0000": "the cat sat", "7-11-0001": "a cab", "7-11-0002": "the hat"}
    chapter_dir = tmp_path / "split" / "7" / "11"
    chapter_dir.mkdir(parents=True)
    for i, (utt, seconds) in enumerate(zip(texts, (1.2, 0.3, 0.5))):
        noise(chapter_dir / f"{utt}.flac", seconds=seconds, seed=i)
    (chapter_dir / "7-11.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    dataset = load_speech_dataset(str(tmp_path / "split"))
    decoders = {"greedy": lambda logits, frames: greedy_decode(logits.argmax(-1), processor.tokenizer, frames)}
    calls = []
    hook = model.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape)))
    one_pass = {row["id"]: row for row in transcribe_dataset(model, processor, dataset, decoders, batch_size=3)}
    assert max(shape[1] for shape in calls) == 1.2 * 16000  # the long file went through in one piece
    calls.clear()
    chunked = {row["id"]: row for row in transcribe_dataset(model, processor, dataset, decoders, batch_size=3,
                                                              max_duration_s=0.4)}
    hook.remove()
    assert max(shape[1] for shape in calls) <= 0.4 * 16000  # no input longer than the maximum
    assert len(one_pass["7-11-0000"]["greedy"]) > 10
    assert chunked == one_pass
    # the script: the same hypotheses, and the count of chunked utterances in the result
    base = ["--model", str(folder), "--dataset_name", str(tmp_path / "split"), "--batch_size", "2"]
    result = evaluate_ctc.run([*base, "--max_duration_s", "0.4", "--predictions", str(tmp_path / "chunked.jsonl")])
    assert result["chunked_utterances"] == 2  # 1.2 s and 0.5 s
    unchunked = evaluate_ctc.run([*base, "--predictions", str(tmp_path / "one_pass.jsonl")])
    assert unchunked["chunked_utterances"] == 0
    assert (tmp_path / "chunked.jsonl").read_text() == (tmp_path / "one_pass.jsonl").read_text()


def test_transcribe_prints_the_good_files_and_fails_at_the_end(frame_local_model, tmp_path, capsys, monkeypatch):
    folder = frame_local_model[0]
    good = [noise(tmp_path / "a.wav", seed=1), noise(tmp_path / "b.flac", seed=2, sr=22050)]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio" * 100)
    files = [good[0], tmp_path / "missing.wav", garbage, good[1]]
    monkeypatch.setattr("sys.argv", ["transcribe.py", "--model", str(folder), "--files", *map(str, files)])
    with pytest.raises(SystemExit) as exit_info:
        transcribe.main()
    assert exit_info.value.code == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    asr = asr_pipeline(str(folder))
    assert [lines[0]["text"], lines[3]["text"]] == [asr(str(path))["text"] for path in good]
    assert "no such file" in lines[1]["error"] and "unreadable" in lines[2]["error"]
    assert "text" not in lines[1] and "error" not in lines[0]
