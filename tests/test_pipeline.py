"""pipeline("automatic-speech-recognition") over our W2V2ForCTC folders: arrays, files without FFmpeg, other sampling
rates, chunked long audio, char and word timestamps, the real recordings in ../shared/real_speech."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REAL_SPEECH, WORD_BIGRAM_ARPA, needs_real_speech
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
    pipeline,
)

from hf_wav2vec2 import W2V2Config, W2V2ForCTC
from hf_wav2vec2.cli import transcribe
from hf_wav2vec2.data import decode_audio
from hf_wav2vec2.decoding import KenLMBeamSearchDecoder, greedy_decode
from hf_wav2vec2.hub import save_hub_folder
from hf_wav2vec2.pipeline import DEFAULT_MAX_DURATION_S, SpeechRecognitionPipeline, asr_pipeline, load_audio

FRAME_S = 0.02  # 320 samples at 16 kHz
# The real conv geometry (400-sample field, 320-sample hop) at a CPU-friendly width.
SMALL = dict(num_hidden_layers=2, conv_dim=(64,) * 7, hidden_size=64, intermediate_size=128, num_attention_heads=2,
             num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0,
             activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0)


def make_processor(folder: Path, do_normalize: bool) -> Wav2Vec2Processor:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, "'": 3, **{c: 4 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                     word_delimiter_token="|", bos_token=None, eos_token=None)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=do_normalize, return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """BASE-like (group norm, full attention) random model + processor."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("asr")
    processor = make_processor(root / "vocab", do_normalize=True)
    model = W2V2ForCTC(W2V2Config.tiny(vocab_size=len(processor.tokenizer), **SMALL)).eval()
    return save_hub_folder(model, processor, root / "model")


@pytest.fixture(scope="module")
def frame_local_folder(tmp_path_factory):
    """A model whose logits at a frame depend only on the audio within +-16 frames of it: layer-norm conv encoder
    (group norm takes statistics over the whole utterance), attention output projections zeroed (attention adds
    only its bias), positional conv of 32 frames; no per-utterance waveform normalisation. Chunks with strides of
    more than 16 frames therefore see exactly what one pass sees, and chunked == unchunked is an exact check of the
    pipeline's chunk and stride arithmetic with our frame geometry."""
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("asr_local")
    processor = make_processor(root / "vocab", do_normalize=False)
    config = W2V2Config.tiny(vocab_size=len(processor.tokenizer), feat_extract_norm="layer", conv_bias=True, **SMALL)
    model = W2V2ForCTC(config).eval()
    with torch.no_grad():
        for layer in model.wav2vec2.encoder.layers:
            layer.attention.out_proj.weight.zero_()
    return save_hub_folder(model, processor, root / "model")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """~24 s of real speech (four recordings back to back), or synthetic noise bursts without shared/."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    if REAL_SPEECH.is_dir():
        names = ["librispeech-1995-1837-0001.wav", "ljspeech-LJ050-0131.wav", "picovoice-test_en.wav",
                 "sphinx4-10001-90210-01803.wav"]
        audio = np.concatenate([decode_audio(REAL_SPEECH / name) for name in names])
    else:
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(16000 * 24) * np.repeat(rng.random(24 * 5), 3200)).astype(np.float32) * 0.1
    sf.write(path, audio, 16000, subtype="FLOAT")
    return path


def check_timestamps(chunks, duration_s):
    times = [t for chunk in chunks for t in chunk["timestamp"]]
    assert all(np.isclose(t / FRAME_S, round(t / FRAME_S)) for t in times)  # whole 20 ms frames
    assert all(a <= b for a, b in zip(times, times[1:]))  # ordered, non-overlapping
    assert times[-1] <= duration_s + FRAME_S


def test_numpy_arrays_match_the_model_decoded_by_hand(folder):
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    model = W2V2ForCTC.from_pretrained(folder).eval()
    processor = Wav2Vec2Processor.from_pretrained(folder)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (16000, 23000)]
    for wave in waves:
        inputs = processor(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values).logits
        expected = greedy_decode(logits.argmax(-1), processor.tokenizer)[0]
        assert expected.strip()  # a random head emits letters, not only blanks
        assert asr(wave)["text"] == expected
        assert asr({"raw": wave, "sampling_rate": 16000})["text"] == expected
    # batched (padded, with attention mask): the same texts once the padded frames are not decoded
    batched = asr_pipeline(str(folder))(waves, batch_size=2)
    assert [out["text"] for out in batched] == [asr(wave)["text"] for wave in waves]


def test_batched_transformers_model_decodes_padding_as_blank(tmp_path):
    """transformers' Wav2Vec2ForCTC returns no frame lengths: its own arithmetic gives them. A layer-norm model masks
    its padding, so a padded batch gives the texts of the utterances alone, which transformers' pipeline does not."""
    torch.manual_seed(2)
    processor = make_processor(tmp_path / "vocab", do_normalize=False)
    config = Wav2Vec2Config(vocab_size=len(processor.tokenizer), feat_extract_norm="layer", do_stable_layer_norm=True,
                            conv_bias=True, **SMALL)
    Wav2Vec2ForCTC(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (16000, 6000)]
    asr = asr_pipeline(str(tmp_path / "model"))
    alone = [asr(wave)["text"] for wave in waves]
    assert [out["text"] for out in asr(waves, batch_size=2)] == alone
    stock = pipeline("automatic-speech-recognition", model=str(tmp_path / "model"))
    assert stock(waves, batch_size=2)[1]["text"] != alone[1]  # the padded frames read as speech


@pytest.mark.skipif(shutil.which("ffmpeg") is not None, reason="FFmpeg is installed here")
def test_stock_pipeline_needs_ffmpeg_for_paths(folder, long_file):
    """What transformers does with a path: read the bytes and pipe them through the ffmpeg program."""
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    with pytest.raises(ValueError, match="ffmpeg was not found"):
        asr(str(long_file))


def test_paths_bytes_and_other_rates_without_ffmpeg(folder, tmp_path):
    asr = asr_pipeline(str(folder))
    assert isinstance(asr, SpeechRecognitionPipeline)
    stock = pipeline("automatic-speech-recognition", model=str(folder))
    # 44.1 kHz stereo, 24-bit FLAC (the real one when shared/ is there)
    path = REAL_SPEECH / "whisper-jfk.flac"
    if not path.is_file():
        rng = np.random.default_rng(0)
        path = tmp_path / "stereo.flac"
        sf.write(path, 0.1 * rng.standard_normal((44100 * 3, 2)), 44100, subtype="PCM_24")
    expected = stock(load_audio(path))["text"]  # decoded + resampled by us, fed as a 16 kHz array
    assert expected.strip()
    assert asr(str(path))["text"] == expected
    assert asr(path.read_bytes())["text"] == expected
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 44100 and samples.shape[1] == 2
    # (channels, samples) at 44.1 kHz: resampled with soxr (transformers would need torchaudio)
    assert asr({"raw": samples.T, "sampling_rate": rate})["text"] == expected


def test_chunked_long_audio_equals_one_pass(frame_local_folder, long_file):
    asr = asr_pipeline(str(frame_local_folder))
    calls = []
    asr.model.register_forward_hook(lambda module, args, output: calls.append(output.logits.shape))
    duration = sf.info(long_file).duration
    one_pass = asr(str(long_file), return_timestamps="char")
    assert len(calls) == 1 and len(one_pass["text"]) > 100
    calls.clear()
    chunked = asr(str(long_file), chunk_length_s=4, stride_length_s=1, return_timestamps="char")
    assert len(calls) >= math.ceil((duration - 4) / 2) + 1  # 4 s chunks advancing by 2 s (4 - 2 x 1 s strides)
    assert chunked["text"] == one_pass["text"]
    assert chunked["chunks"] == one_pass["chunks"]
    # batched chunks (the last one padded) and asymmetric strides: still the same
    batched = asr(str(long_file), chunk_length_s=5, stride_length_s=(1.0, 1.5), batch_size=4,
                  return_timestamps="word")
    assert batched["text"] == one_pass["text"]
    check_timestamps(batched["chunks"], duration)


def test_char_and_word_timestamps(folder, long_file):
    asr = asr_pipeline(str(folder))
    audio = load_audio(long_file)["raw"][: 16000 * 6]
    chars = asr(audio, return_timestamps="char")
    words = asr(audio, return_timestamps="word")
    assert chars["text"] == words["text"]
    assert "".join(chunk["text"] for chunk in chars["chunks"]) == chars["text"]
    assert [chunk["text"] for chunk in words["chunks"]] == words["text"].split()
    check_timestamps(chars["chunks"], 6.0)
    check_timestamps(words["chunks"], 6.0)
    # each word spans its characters
    letters = [c for c in chars["chunks"] if c["text"] != " "]
    assert words["chunks"][0]["timestamp"][0] == letters[0]["timestamp"][0]
    assert words["chunks"][-1]["timestamp"][1] == letters[-1]["timestamp"][1]


@needs_real_speech
def test_real_recordings_of_every_format(folder):
    """Shape and timing of the output on the real files (mixed rates, channels, formats), not accuracy."""
    asr = asr_pipeline(str(folder))
    files = sorted(p for p in REAL_SPEECH.iterdir() if p.suffix in (".wav", ".flac"))
    assert files
    for path in files:
        duration = sf.info(path).duration
        out = asr(str(path), return_timestamps="word")
        assert isinstance(out["text"], str) and out["text"].strip(), path.name
        assert [chunk["text"] for chunk in out["chunks"]] == out["text"].split()
        check_timestamps(out["chunks"], duration)
        frames = (round(duration * 16000) - 400) // 320 + 1
        # at most one token per frame (a random model may emit [UNK], one token of five characters)
        assert len(out["text"].replace("[UNK]", "?").replace(" ", "")) <= frames


def test_inputs_longer_than_max_duration_are_chunked_unless_the_caller_chose(frame_local_folder, long_file):
    """8 s of audio with max_duration_s=3: chunks of 3 s (strides of 0.5 s) without asking, the text of one pass."""
    asr = asr_pipeline(str(frame_local_folder), max_duration_s=3)
    calls = []
    asr.model.register_forward_hook(lambda module, args, kwargs, output: calls.append(kwargs["input_values"].shape[-1]),
                                    with_kwargs=True)
    audio = load_audio(long_file)["raw"][: 16000 * 8]
    automatic = asr(audio)
    assert len(calls) == math.ceil((8 - 3) / (3 - 2 * 0.5)) + 1 and max(calls) <= 3 * 16000
    calls.clear()
    one_pass = asr(audio, chunk_length_s=0)  # the caller's choice: one pass, however long
    assert calls == [len(audio)]
    assert automatic["text"] == one_pass["text"] and len(one_pass["text"]) > 30
    calls.clear()
    asr(audio, max_duration_s=None)  # per call: automatic chunking off
    asr(audio[: 16000 * 2])  # shorter than the maximum
    assert len(calls) == 2
    assert DEFAULT_MAX_DURATION_S >= 30  # LibriSpeech utterances (35 s at most) mostly run in one pass


def make_lm(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    (tmp_path / "lm.arpa").write_text(WORD_BIGRAM_ARPA)
    return tmp_path / "lm.arpa"


def test_kenlm_decoding_through_the_pipeline(folder, tmp_path):
    """Oracle: the model's logits computed by hand, decoded by KenLMBeamSearchDecoder (tests/test_decoding.py checks
    it against hand-made emissions)."""
    arpa = make_lm(tmp_path)
    options = dict(beam_size=8, lm_weight=1.0, word_score=3.0)  # a word bonus: the random model's words show
    asr = asr_pipeline(str(folder), kenlm_model=str(arpa), **options)
    model = W2V2ForCTC.from_pretrained(folder).eval()
    processor = Wav2Vec2Processor.from_pretrained(folder)
    decoder = KenLMBeamSearchDecoder.from_tokenizer(processor.tokenizer, arpa, **options)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (16000, 23000, 9000)]
    expected = []
    for wave in waves:
        inputs = processor(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            expected += decoder(model(inputs.input_values).logits)
    assert any(expected) and all(set(text.split()) <= {"THE", "CAT", "CAB", "SAT"} for text in expected)
    assert [asr(wave)["text"] for wave in waves] == expected
    assert [out["text"] for out in asr(waves, batch_size=3)] == expected  # padded frames decode as blank
    # a decoder built already, through decoder=; the stock pipeline class takes it too (as a pyctcdecode decoder)
    assert asr_pipeline(str(folder), decoder=decoder)(waves[0])["text"] == expected[0]
    stock = pipeline("automatic-speech-recognition", model=str(folder), decoder=decoder)
    assert stock(waves[0])["text"] == expected[0]
    # word timestamps: one per word, in order, within the audio
    words = asr(waves[1], return_timestamps="word")
    assert [chunk["text"] for chunk in words["chunks"]] == expected[1].split()
    if words["chunks"]:
        check_timestamps(words["chunks"], 23000 / 16000)
    # options that cannot take effect are errors, not silently ignored
    with pytest.raises(ValueError, match="when the pipeline is built"):
        asr(waves[0], beam_size=3)
    with pytest.raises(ValueError, match="need kenlm_model"):
        asr_pipeline(str(folder), lm_weight=1.0)
    with pytest.raises(ValueError, match="only be 'word'"):
        asr(waves[0], return_timestamps="char")


def test_kenlm_decoding_of_chunked_input_equals_one_pass(frame_local_folder, long_file, tmp_path):
    """Chunks' logits are joined before the beam search: with a model whose frames see less than the strides, the
    chunked LM text is the one-pass LM text."""
    asr = asr_pipeline(str(frame_local_folder), kenlm_model=str(make_lm(tmp_path)), beam_size=8, lm_weight=1.0,
                       word_score=3.0, max_duration_s=3)
    audio = load_audio(long_file)["raw"][: 16000 * 8]
    one_pass = asr(audio, chunk_length_s=0)["text"]
    assert len(one_pass.split()) > 3 and set(one_pass.split()) <= {"THE", "CAT", "CAB", "SAT"}
    assert asr(audio)["text"] == one_pass  # chunked automatically (3 s)
    assert asr(audio, chunk_length_s=2.5, stride_length_s=0.5, batch_size=3)["text"] == one_pass


def test_transcribe_script(folder, tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = []
    for name, rate in (("0", 16000), ("réunion-東京", 22050)):
        files.append(tmp_path / f"{name}.wav")
        sf.write(files[-1], 0.1 * rng.standard_normal(rate * 2), rate)
    out = transcribe.run(["--model", str(folder), "--timestamps", "word", "--files", *map(str, files)])
    assert "réunion-東京" in capsys.readouterr().out  # printed as it is, not as \u escapes
    asr = asr_pipeline(str(folder))
    assert [r["text"] for r in out] == [asr(str(f))["text"] for f in files]
    assert [c["text"] for c in out[0]["chunks"]] == out[0]["text"].split()
    if importlib.util.find_spec("flashlight") is not None:  # --kenlm: the pipeline with the LM decoder
        (tmp_path / "lm.arpa").write_text(WORD_BIGRAM_ARPA)
        out = transcribe.run(["--model", str(folder), "--kenlm", str(tmp_path / "lm.arpa"), "--beam_size", "4",
                              "--timestamps", "word", "--files", *map(str, files)])
        lm = asr_pipeline(str(folder), kenlm_model=str(tmp_path / "lm.arpa"), beam_size=4)
        assert [r["text"] for r in out] == [lm(str(f))["text"] for f in files]
        assert all(set(r["text"].split()) <= {"THE", "CAT", "CAB", "SAT"} for r in out)  # the LM's words
        assert [[c["text"] for c in r["chunks"]] for r in out] == [r["text"].split() for r in out]
