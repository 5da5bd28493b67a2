"""Transcribe audio files with a CTC model: transformers' ASR pipeline (no FFmpeg needed), or beam search with a
KenLM n-gram.

Usage:
    python transcribe.py --model runs/ctc-base-10h --files speech.flac other.wav
    python transcribe.py --model me/w2v2-base-10h --chunk_length_s 20 --timestamps word --files long_recording.flac
    python transcribe.py --model runs/ctc-base-10h --kenlm 4-gram.arpa.gz --beam_size 500 --files speech.flac

Prints one JSON line per file: ``{"file", "text"}`` and, with ``--timestamps``, ``"chunks"`` (text and start/end
seconds per character or word). Files are decoded with soundfile and resampled to 16 kHz with soxr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCTC, AutoProcessor, HfArgumentParser

import hf_wav2vec2  # noqa: F401  (registers model_type "w2v2" with the Auto classes)
from hf_wav2vec2.data import decode_audio
from hf_wav2vec2.decoding import KenLMBeamSearchDecoder
from hf_wav2vec2.feature_encoder import receptive_field
from hf_wav2vec2.pipeline import asr_pipeline


@dataclass
class Arguments:
    model: str = field(metadata={"help": "model folder or Hub id"})
    files: list[str] = field(metadata={"help": "audio files (WAV, FLAC, OGG, MP3), any sampling rate"})
    chunk_length_s: float = field(default=0.0, metadata={"help": "split long audio into chunks of this length"})
    stride_length_s: float | None = field(default=None, metadata={"help": "context on each side of a chunk "
                                                                          "(default: chunk_length_s / 6)"})
    timestamps: str | None = field(default=None, metadata={"help": "char or word"})
    batch_size: int = 1
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    trust_remote_code: bool = False
    kenlm: str | None = field(default=None, metadata={"help": "KenLM model: beam search instead of the pipeline"})
    lexicon: str | None = None
    beam_size: int = 50
    lm_weight: float = 2.0
    word_score: float = -1.0


def run(argv: list[str] | None = None) -> list[dict]:
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(args=argv)
    results = []
    if args.kenlm is None:
        # 1. the pipeline: chunking, batching and timestamps as transformers does them
        asr = asr_pipeline(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
        options = {"batch_size": args.batch_size}
        if args.chunk_length_s:
            options.update(chunk_length_s=args.chunk_length_s, stride_length_s=args.stride_length_s)
        if args.timestamps:
            options["return_timestamps"] = args.timestamps
        for path, out in zip(args.files, asr(list(args.files), **options)):
            chunks = [{"text": c["text"], "timestamp": [float(t) for t in c["timestamp"]]}
                      for c in out.get("chunks", [])]
            results.append({"file": path, "text": out["text"], **({"chunks": chunks} if args.timestamps else {})})
    else:
        # 2. beam search with the LM over the logits of the whole file
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        model = AutoModelForCTC.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        model.to(args.device).eval()
        decoder = KenLMBeamSearchDecoder.from_tokenizer(
            processor.tokenizer, args.kenlm, vocab_size=model.config.vocab_size, lexicon=args.lexicon,
            beam_size=args.beam_size, lm_weight=args.lm_weight, word_score=args.word_score)
        rate = processor.feature_extractor.sampling_rate
        shortest = receptive_field(model.config.conv_kernel, model.config.conv_stride)  # fewer samples: no frame
        for path in args.files:
            inputs = processor(decode_audio(path, rate, min_samples=shortest), sampling_rate=rate, return_tensors="pt")
            with torch.inference_mode():
                logits = model(inputs.input_values.to(args.device)).logits
            results.append({"file": path, "text": decoder(logits)[0]})
    for result in results:
        print(json.dumps(result))
    return results


def main() -> None:
    """The console command: ``run`` on the command line's arguments (its result is printed, not returned)."""
    run()


if __name__ == "__main__":
    main()
