"""CTC decoding: greedy, beam search with hand-written KenLM n-grams (flashlight-text), WER/CER, evaluate_ctc.py."""

import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

from hf_wav2vec2 import W2V2ForCTC
from hf_wav2vec2.data import decode_audio, normalize_transcript
from hf_wav2vec2.decoding import (
    KenLMBeamSearchDecoder,
    error_rates,
    frame_lengths,
    greedy_decode,
    is_arpa,
    read_arpa_unigrams,
    read_lexicon,
)

ROOT = Path(__file__).resolve().parents[1]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# A word bigram LM: after THE, CAT is 10^2.9 times likelier than CAB; both are in the vocabulary.
WORD_BIGRAM = """
\\data\\
ngram 1=7
ngram 2=8

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-1.0\t</s>\t0
-1.0\tTHE\t-0.5
-1.5\tCAT\t-0.5
-1.5\tCAB\t-0.5
-1.5\tSAT\t-0.5

\\2-grams:
-0.1\t<s> THE
-0.1\tTHE CAT
-3.0\tTHE CAB
-0.1\tCAT SAT
-3.0\tCAB SAT
-0.1\tSAT </s>
-1.0\tCAT </s>
-1.0\tCAB </s>

\\end\\
"""

# A character bigram LM over the tokens (| separates words): T follows A, B hardly ever does.
CHAR_BIGRAM = """
\\data\\
ngram 1=11
ngram 2=11

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>\t0
-1.0\tT\t-0.3
-1.0\tH\t-0.3
-1.0\tE\t-0.3
-1.0\t|\t-0.3
-1.0\tC\t-0.3
-1.0\tA\t-0.3
-1.0\tS\t-0.3
-2.0\tB\t-0.3

\\2-grams:
-0.1\t<s> T
-0.1\tT H
-0.1\tH E
-0.1\tE |
-0.3\t| C
-0.3\t| S
-0.1\tC A
-0.1\tS A
-0.1\tA T
-3.0\tA B
-0.3\tT |

\\end\\
"""


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
    arpa.write_text(WORD_BIGRAM)
    assert greedy_decode(cat_logits, tokenizer) == ["THE CAB SAT"]
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=2.0, word_score=-1.0)
    assert not decoder.lexicon_free  # word unigrams: lexicon decoder, lexicon spelled from them
    assert decoder(cat_logits) == ["THE CAT SAT"]
    # Without the LM's weight the acoustics win again: the LM, not the lexicon, made the choice.
    no_lm = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=0.0, word_score=0.0)
    assert no_lm(cat_logits) == ["THE CAB SAT"]
    # gzipped ARPA (KenLM in the wheel reads it) and an explicit lexicon file give the same.
    gz = tmp_path / "bigram.arpa.gz"
    gz.write_bytes(gzip.compress(WORD_BIGRAM.encode()))
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("THE T H E |\nCAT C A T |\nCAB C A B |\nSAT\n")  # SAT: spelled from its letters
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, gz, lexicon=lexicon, beam_size=10)
    assert decoder(cat_logits) == ["THE CAT SAT"]


def test_character_lm_decodes_without_lexicon(tokenizer, cat_logits, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    arpa = tmp_path / "chars.arpa"
    arpa.write_text(CHAR_BIGRAM)
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10, lm_weight=1.0)
    assert decoder.lexicon_free  # every unigram is a token
    assert decoder(cat_logits) == ["THE CAT SAT"]


def test_batch_decoding_respects_lengths(tokenizer, cat_logits, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM)
    short = emissions(tokenizer, "THE|CAT", {6: {"B": 0.5, "T": 0.4}})
    # Padding frames say "SAT": they must be ignored.
    padded = torch.cat([short, cat_logits[:, short.shape[1]:]], dim=1)
    batch = torch.cat([cat_logits, padded])
    lengths = torch.tensor([cat_logits.shape[1], short.shape[1]])
    assert greedy_decode(batch, tokenizer, lengths) == ["THE CAB SAT", "THE CAB"]
    decoder = KenLMBeamSearchDecoder.from_tokenizer(tokenizer, arpa, beam_size=10)
    assert decoder(batch, lengths) == ["THE CAT SAT", "THE CAT"]


def test_lm_files_and_lexicons(tokenizer, tmp_path):
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(WORD_BIGRAM)
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


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_ctc", ROOT / "evaluate_ctc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_ctc"] = module  # dataclasses resolve the Arguments annotations through it
    spec.loader.exec_module(module)
    return module


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
    arpa.write_text(WORD_BIGRAM)
    # 2. the script
    script = _load_script()
    argv = ["--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "split"), "--batch_size", "3",
            "--predictions", str(tmp_path / "pred.jsonl"), "--output_json", str(tmp_path / "scores.json")]
    has_lm = importlib.util.find_spec("flashlight") is not None
    if has_lm:
        argv += ["--kenlm", str(arpa), "--beam_size", "8"]
    result = script.main(argv)
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert result["num_utterances"] == 4 and len(rows) == 4
    assert json.loads((tmp_path / "scores.json").read_text())["greedy"] == result["greedy"]
    # 3. the oracle: each file alone, unpadded
    for row in rows:
        audio = decode_audio(chapter / f"{row['id']}.flac")
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values).logits
        assert logits.shape[1] == int(frame_lengths(model.config, torch.tensor([len(audio)]))[0])
        assert row["greedy"] == normalize_transcript(greedy_decode(logits, tokenizer)[0].replace("[UNK]", ""))
        assert row["reference"] == texts[row["id"]].upper()
        if has_lm:
            assert set(row["lm"].split()) <= {"THE", "CAT", "CAB", "SAT"}
    references = [row["reference"] for row in rows]
    assert result["greedy"] == error_rates(references, [row["greedy"] for row in rows])
