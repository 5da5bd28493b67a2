"""CTC decoding (greedy, beam search with hand-written KenLM n-grams through flashlight-text, the real frames of a
padded batch) and evaluation (WER/CER, transcribe_dataset through evaluate_ctc.py)."""

import gzip
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import CHAR_BIGRAM_ARPA, WORD_BIGRAM_ARPA, tiny_config, tiny_hf_config
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

from hf_wav2vec2 import W2V2ForCTC
from hf_wav2vec2.cli import evaluate_ctc
from hf_wav2vec2.data import decode_audio, normalize_transcript
from hf_wav2vec2.decoding import (
    KenLMBeamSearchDecoder,
    greedy_decode,
    is_arpa,
    output_frame_lengths,
    read_arpa_unigrams,
    read_lexicon,
)
from hf_wav2vec2.evaluation import error_rates

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"



def make_tokenizer(folder: Path) -> Wav2Vec2CTCTokenizer:
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, "'": 3, **{c: 4 + i for i, c in enumerate(LETTERS)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                word_delimiter_token="|", bos_token=None, eos_token=None)


def emissions(tokenizer, spoken: str, ambiguous: dict[int, dict[str, float]]) -> torch.Tensor:
    """(1, T, V) logits: each character of ``spoken`` for one frame (probability 0.9, or the given distribution
    at the positions in ``ambiguous``), a blank frame after each."""
    vocab = tokenizer.get_vocab()
    rows = []
    for position, char in enumerate(spoken):
        p = np.full(len(vocab), 0.01)
        for token, prob in ambiguous.get(position, {char: 0.9}).items():
            p[vocab[token]] = prob
        rows.append(p / p.sum())
        blank = np.full(len(vocab), 0.01)
        blank[vocab["[PAD]"]] = 0.9
        rows.append(blank / blank.sum())
    return torch.log(torch.tensor(np.array(rows), dtype=torch.float32))[None]


@pytest.fixture
def tokenizer(tmp_path):
    return make_tokenizer(tmp_path)


@pytest.fixture
def cat_logits(tokenizer):
    # The acoustics favour B over T in the third letter of CAT: greedy reads CAB.
    return emissions(tokenizer, "THE|CAT|SAT", {6: {"B": 0.5, "T": 0.4}})


def test_greedy_gets_a_letter_wrong_and_the_word_lm_fixes_it(tokenizer, cat_logits, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM_ARPA)
    assert greedy_decode(cat_logits.argmax(-1), tokenizer) == ["THE CAB SAT"]
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=2.0, word_score=-1.0)
    assert not decoder.lexicon_free  # word unigrams: lexicon decoder, lexicon spelled from them
    assert decoder(cat_logits) == ["THE CAT SAT"]
    # Without the LM's weight the acoustics win again: the LM, not the lexicon, made the choice.
    no_lm = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=0.0, word_score=0.0)
    assert no_lm(cat_logits) == ["THE CAB SAT"]
    # gzipped ARPA (KenLM in the wheel reads it) and an explicit lexicon file give the same.
    gz = tmp_path / "bigram.arpa.gz"
    gz.write_bytes(gzip.compress(WORD_BIGRAM_ARPA.encode()))
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("THE T H E |\nCAT C A T |\nCAB C A B |\nSAT\n")  # SAT: spelled from its letters
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, gz, lexicon=lexicon, beam_size=10)
    assert decoder(cat_logits) == ["THE CAT SAT"]


def test_character_lm_decodes_without_lexicon(tokenizer, cat_logits, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    arpa = tmp_path / "chars.arpa"
    arpa.write_text(CHAR_BIGRAM_ARPA)
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=1.0)
    assert decoder.lexicon_free  # every unigram is a token
    assert decoder(cat_logits) == ["THE CAT SAT"]


def test_batch_decoding_respects_lengths(tokenizer, cat_logits, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM_ARPA)
    short = emissions(tokenizer, "THE|CAT", {6: {"B": 0.5, "T": 0.4}})
    # Padding frames say "SAT": they must be ignored.
    padded = torch.cat([short, cat_logits[:, short.shape[1]:]], dim=1)
    batch = torch.cat([cat_logits, padded])
    lengths = torch.tensor([cat_logits.shape[1], short.shape[1]])
    assert greedy_decode(batch.argmax(-1), tokenizer, lengths) == ["THE CAB SAT", "THE CAB"]
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10)
    assert decoder(batch, lengths) == ["THE CAT SAT", "THE CAT"]


def test_word_frames_and_the_pyctcdecode_interface(tokenizer, cat_logits, tmp_path):
    """emissions() gives each letter one frame and a blank after it: T0 H2 E4 |6 C8 A10 T12 |14 S16 A18 T20, so the
    words span frames [0, 5), [8, 13) and [16, 21) (end exclusive), for the word LM and the character LM alike."""
    pytest.importorskip("flashlight.lib.text")
    expected = [("THE", (0, 5)), ("CAT", (8, 13)), ("SAT", (16, 21))]
    for name, arpa_text in (("words.arpa", WORD_BIGRAM_ARPA), ("chars.arpa", CHAR_BIGRAM_ARPA)):
        (tmp_path / name).write_text(arpa_text)
        decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, tmp_path / name, beam_size=10, lm_weight=1.0)
        assert decoder.decode_with_word_frames(cat_logits) == [("THE CAT SAT", expected)]
        # what transformers' pipeline reads from a pyctcdecode decoder: beams[0][0] text, beams[0][2] word frames
        beams = decoder.decode_beams(cat_logits[0].numpy())
        assert len(beams) == 1 and beams[0][0] == "THE CAT SAT" and beams[0][2] == expected


def test_greedy_decode_reads_negative_ids_as_blank(tokenizer, cat_logits):
    """The Trainer pads predictions of shorter batches with -100: the same text as the unpadded ids."""
    ids = cat_logits.argmax(-1)  # (1, T)
    padded = torch.cat([ids, torch.full((1, 5), -100)], dim=1)
    assert greedy_decode(padded, tokenizer) == greedy_decode(ids, tokenizer) == ["THE CAB SAT"]
    assert greedy_decode(padded.numpy(), tokenizer) == ["THE CAB SAT"]  # as compute_metrics gets them


def test_output_frame_lengths_of_ours_and_of_transformers_model():
    """Our model returns its real frames; transformers' Wav2Vec2ForCTC gets them from its own arithmetic. Both
    equal the frames of each item run alone."""
    ours = W2V2ForCTC(tiny_config()).eval()
    theirs = Wav2Vec2ForCTC(tiny_hf_config()).eval()
    sample_lengths = torch.tensor([900, 640])
    inputs = torch.randn(2, 900)
    mask = (torch.arange(900)[None, :] < sample_lengths[:, None]).long()
    with torch.no_grad():
        alone = [ours(inputs[i : i + 1, :n]).logits.shape[1] for i, n in enumerate(sample_lengths.tolist())]
        for model in (ours, theirs):
            outputs = model(inputs, attention_mask=mask)
            assert output_frame_lengths(model, outputs, sample_lengths).tolist() == alone
        outputs = theirs(inputs)  # no sample counts: every item has all frames
        assert output_frame_lengths(theirs, outputs, None).tolist() == [outputs.logits.shape[1]] * 2


def test_lm_files_and_lexicons(tokenizer, tmp_path):
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM_ARPA)
    assert is_arpa(arpa)
    assert read_arpa_unigrams(arpa) == ["<unk>", "<s>", "</s>", "THE", "CAT", "CAB", "SAT"]
    words = tmp_path / "words.txt"
    words.write_text("THE\nCAT C A T |\nCAT K A T |\n")
    assert read_lexicon(words) == {"THE": None, "CAT": [["C", "A", "T", "|"], ["K", "A", "T", "|"]]}
    fake_binary = tmp_path / "lm.bin"
    fake_binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0\0")
    assert not is_arpa(fake_binary)
    pytest.importorskip("flashlight.lib.text")
    with pytest.raises(ValueError, match="binary: pass a lexicon"):
        KenLMBeamSearchDecoder.from_tokenizer(tokenizer, fake_binary)
    with pytest.raises(FileNotFoundError):
        KenLMBeamSearchDecoder.from_tokenizer(tokenizer, tmp_path / "missing.arpa")


def test_error_rates_count_edits_over_the_corpus():
    # 1 substitution in 4 words + 0 in 2: WER 1/6. CER: 1 of 13 + 8 reference characters (spaces count).
    scores = error_rates(["THE CAT SAT ON", "A MAT"], ["THE CAB SAT ON", "A MAT"])
    assert math.isclose(scores["wer"], 1 / 6)
    assert math.isclose(scores["cer"], 1 / (len("THE CAT SAT ON") + len("A MAT")))
    with pytest.raises(ValueError, match="empty reference"):
        error_rates([""], ["A"])


def test_evaluate_ctc_script_matches_per_utterance_decoding(tokenizer, tmp_path):
    """The batched, padded, longest-first evaluation gives what each utterance decoded alone gives."""
    # 1. a tiny model + processor folder (conv stride 20) and a LibriSpeech-style split folder
    model = W2V2ForCTC(tiny_config(feat_extract_norm="group", vocab_size=len(tokenizer))).eval()
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True),
                                  tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    chapter = tmp_path / "split" / "7" / "11"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    texts = {"7-11-0000": "the cat sat", "7-11-0001": "a cab", "7-11-0002": "the hat", "7-11-0003": "sat"}
    for i, utt in enumerate(texts):
        sf.write(chapter / f"{utt}.flac", 0.1 * rng.standard_normal(1600 + 700 * i), 16000)
    (chapter / "7-11.trans.txt").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM_ARPA)
    # 2. the script
    argv = ["--model", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "split"), "--batch_size", "3",
            "--predictions", str(tmp_path / "pred.jsonl"), "--output_json", str(tmp_path / "scores.json")]
    has_lm = importlib.util.find_spec("flashlight") is not None
    if has_lm:
        argv += ["--kenlm", str(arpa), "--beam_size", "8"]
    result = evaluate_ctc.run(argv)
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert result["num_utterances"] == 4 and len(rows) == 4
    assert json.loads((tmp_path / "scores.json").read_text())["greedy"] == result["greedy"]
    # 3. the oracle: each file alone, unpadded
    for row in rows:
        audio = decode_audio(chapter / f"{row['id']}.flac")
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values).logits
        assert logits.shape[1] == int(model.num_frames(len(audio)))
        greedy = greedy_decode(logits.argmax(-1), tokenizer)[0]
        assert row["greedy"] == normalize_transcript(greedy.replace("[UNK]", ""))
        assert row["reference"] == texts[row["id"]].upper()
        if has_lm:
            assert set(row["lm"].split()) <= {"THE", "CAT", "CAB", "SAT"}
    references = [row["reference"] for row in rows]
    assert result["greedy"] == error_rates(references, [row["greedy"] for row in rows])
