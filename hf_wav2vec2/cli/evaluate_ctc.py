"""Word and character error rates of a CTC model on one split: greedy decoding and, with ``--kenlm``, beam search
with a KenLM n-gram (flashlight-text: the ``lm`` extra, ``pip install ".[lm]"`` in a clone).

Usage:
    # greedy, on the default corpus
    python evaluate_ctc.py --model runs/ctc-tiny --dataset_name data/default_corpus/LibriSpeech \
        --eval_split_name dev-clean

    # LibriSpeech test-other with the official 4-gram word LM (the lexicon is spelled from the LM's unigrams)
    python evaluate_ctc.py --model runs/ctc-base-10h --dataset_name /data/LibriSpeech --eval_split_name test-other \
        --kenlm /data/lm/4-gram.arpa.gz --beam_size 500 --lm_weight 2 --word_score -1 --batch_size 16

    # a KenLM binary needs a lexicon or word list; a character-level LM decodes without lexicon
    python evaluate_ctc.py ... --kenlm 4-gram.bin --lexicon librispeech-vocab.txt
    python evaluate_ctc.py ... --kenlm chars-6gram.arpa --lexicon_free

    # a Hub dataset or a local datasets folder, with the transformers examples' option names
    python evaluate_ctc.py --model me/w2v2-base-fr --dataset_name mozilla-foundation/common_voice_17_0 \
        --dataset_config_name fr --eval_split_name test --text_column_name sentence --max_eval_samples 500

The earlier option names still work, with a warning, until version 0.2: ``--dataset`` (``--dataset_name``),
``--hub_config`` (``--dataset_config_name``), ``--split`` (``--eval_split_name``), ``--max_utterances``
(``--max_eval_samples``).

Transcripts (references and hypotheses) are normalised the way the model was trained: the ``text_normalization``
stored in its tokenizer config by ``train_ctc.py`` (``hf_wav2vec2.data.ctc.processor_normalizer``; a processor
without it gets a guess from its vocabulary, logged). Emitted unknown tokens are dropped first; utterances without a
reference transcript are left out. Prints one JSON object
with the scores (``chunked_utterances``: those longer than ``--max_duration_s``, run in chunks); ``--output_json``
writes it, ``--predictions`` writes one JSON line per utterance (id, reference, each decoding).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import AutoModelForCTC, AutoProcessor, HfArgumentParser

import hf_wav2vec2  # registers model_type "w2v2" with the Auto classes
from hf_wav2vec2.cli.common import start_run, warn_if_emulated_bf16, warn_renamed_options
from hf_wav2vec2.data import load_speech_dataset
from hf_wav2vec2.data.ctc import processor_normalizer
from hf_wav2vec2.decoding import KenLMBeamSearchDecoder, greedy_decode
from hf_wav2vec2.evaluation import error_rates, transcribe_dataset

logger = logging.getLogger("evaluate_ctc")


@dataclass
class Arguments:
    model: str = field(metadata={"help": "model folder or Hub id (our W2V2ForCTC or transformers' Wav2Vec2ForCTC)"})
    dataset_name: list[str] = field(metadata={
        "aliases": ["--dataset"], "help": "Hub dataset, local datasets folder (audiofolder, Hub-layout parquet, "
        "save_to_disk) or local LibriSpeech / Libri-light / audio folder(s) (formerly --dataset)"})
    eval_split_name: str | None = field(default=None, metadata={
        "aliases": ["--split"], "help": "split: test, test-clean, dev-other+test-other, 10min, ... (formerly --split)"})
    dataset_config_name: str | None = field(default=None, metadata={
        "aliases": ["--hub_config"], "help": "datasets configuration, e.g. fr, clean (formerly --hub_config)"})
    audio_column_name: str = field(default="audio", metadata={"help": "audio column of a datasets source"})
    text_column_name: str | None = field(default=None, metadata={
        "help": "transcript column of a datasets source; default: the first of text, sentence, transcription, "
        "transcript, normalized_text"})
    max_eval_samples: int | None = field(default=None, metadata={
        "aliases": ["--max_utterances"], "help": "evaluate only the first N utterances (formerly --max_utterances)"})
    batch_size: int = 8
    max_duration_s: float = field(default=60.0, metadata={
        "help": "an utterance longer than this runs alone, in chunks of this length with a sixth of it as context "
                "on each side (memory stays that of one chunk); 0: every utterance in one pass"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding audio"})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16 (model weights)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "load a Hub folder's code without hf_wav2vec2"})
    kenlm: str | None = field(default=None, metadata={"help": "KenLM model: ARPA (.arpa, .arpa.gz) or binary"})
    lexicon: str | None = field(default=None, metadata={"help": "lexicon (WORD t1 t2 ... |) or word list; default: "
                                                                "the ARPA LM's unigrams"})
    lexicon_free: bool = field(default=False, metadata={"help": "token-level (character) LM, no lexicon (an ARPA LM "
                                                               "whose unigrams are all tokens is detected)"})
    beam_size: int = 50
    beam_size_token: int | None = field(default=None, metadata={"help": "tokens tried per frame (default: all)"})
    beam_threshold: float = 25.0
    lm_weight: float = 2.0
    word_score: float = -1.0
    sil_score: float = 0.0
    output_json: str | None = field(default=None, metadata={"help": "write the scores here"})
    predictions: str | None = field(default=None, metadata={"help": "write per-utterance predictions (JSON lines)"})
    progress: bool = field(default=True, metadata={"help": "a progress bar over the batches (--progress false: none)"})


def run(argv: list[str] | None = None) -> dict:
    start_run(logger, processes=False)
    argv = sys.argv[1:] if argv is None else argv
    warn_renamed_options(argv, Arguments)
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(args=argv)
    hf_wav2vec2.check_model_path(args.model)  # a mistyped local folder: "does not exist", not a Hub error

    # 1. processor, and the transcript normalisation the model was trained with
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    normalizer = processor_normalizer(processor)
    logger.info("transcripts: %s", normalizer.describe())

    # 2. data: utterances with a reference transcript
    dataset = load_speech_dataset(args.dataset_name, split=args.eval_split_name, hub_config=args.dataset_config_name,
                                  audio_column=args.audio_column_name, text_column=args.text_column_name,
                                  normalizer=normalizer)
    dataset = dataset.filter(lambda texts: [bool(t.strip()) for t in texts], input_columns=["text"], batched=True)
    if args.max_eval_samples is not None:
        dataset = dataset.select(range(min(args.max_eval_samples, len(dataset))))
    if len(dataset) == 0:
        raise SystemExit(f"no utterance with a transcript in {args.dataset_name} (split {args.eval_split_name})")

    # 3. model
    model = AutoModelForCTC.from_pretrained(args.model, trust_remote_code=args.trust_remote_code,
                                            dtype=getattr(torch, args.dtype))
    model.to(args.device).eval()
    warn_if_emulated_bf16(logger, torch.device(args.device).type, args.dtype == "bfloat16")
    vocab_size = model.config.vocab_size

    # 4. decoders: greedy, and beam search with the LM when given
    decoders = {"greedy": lambda logits, frames: greedy_decode(logits.argmax(-1), processor.tokenizer, frames)}
    if args.kenlm is not None:
        decoders["lm"] = KenLMBeamSearchDecoder.from_tokenizer(
            processor.tokenizer, args.kenlm, vocab_size=vocab_size, lexicon=args.lexicon,
            lexicon_free=args.lexicon_free or None, beam_size=args.beam_size, beam_size_token=args.beam_size_token,
            beam_threshold=args.beam_threshold, lm_weight=args.lm_weight, word_score=args.word_score,
            sil_score=args.sil_score)

    # 5. transcribe
    start = time.perf_counter()
    rows = []
    unk = processor.tokenizer.unk_token or "\0"  # an unknown-token emission is an error, not the word "UNK"
    for row in transcribe_dataset(model, processor, dataset, decoders, batch_size=args.batch_size,
                                  max_duration_s=args.max_duration_s or None,
                                  num_workers=args.num_workers, device=args.device, progress=args.progress):
        rows.append({key: normalizer(value.replace(unk, "")) if key != "id" else value
                     for key, value in row.items()})
    elapsed = time.perf_counter() - start

    # 6. scores
    references = [row["reference"] for row in rows]
    result = {
        "model": args.model, "dataset": args.dataset_name, "split": args.eval_split_name,
        "hub_config": args.dataset_config_name, "text_normalization": normalizer.to_dict(),
        "num_utterances": len(rows), "skipped_utterances": len(dataset) - len(rows),
        "chunked_utterances": sum(n > args.max_duration_s * processor.feature_extractor.sampling_rate
                                  for n in dataset["num_samples"]) if args.max_duration_s else 0,
        "audio_hours": float(sum(dataset["duration"])) / 3600, "seconds": elapsed,
        **{name: error_rates(references, [row[name] for row in rows]) for name in decoders},
    }
    if args.kenlm is not None:
        result["lm_options"] = {k: v for k, v in asdict(args).items() if k in (
            "kenlm", "lexicon", "lexicon_free", "beam_size", "beam_size_token", "beam_threshold", "lm_weight",
            "word_score", "sil_score")}
    print(json.dumps(result, indent=2))
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return result


def main() -> None:
    """The console command: ``run`` on the command line's arguments (its result is printed, not returned)."""
    run()


if __name__ == "__main__":
    main()
