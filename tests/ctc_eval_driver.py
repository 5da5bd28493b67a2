"""Run by tests/test_launch_ctc.py with python and under torchrun: CTCTrainer.evaluate of a fine-tuned folder on a
split, one utterance per batch (so that one and two processes compute the same batches); the main process writes
the metrics as JSON.

argv: model folder, split folder, output json path.
"""

import faulthandler
import json
import sys

from transformers import TrainingArguments, Wav2Vec2Processor

from hf_wav2vec2 import W2V2ForCTC
from hf_wav2vec2.data import AudioDataset, load_speech_dataset
from hf_wav2vec2.data.ctc import CTCCollator, filter_ctc_dataset, processor_normalizer
from hf_wav2vec2.training.finetune import CTCTrainer


def main(model_dir: str, split_dir: str, out_path: str):
    model = W2V2ForCTC.from_pretrained(model_dir)
    processor = Wav2Vec2Processor.from_pretrained(model_dir)
    samples = model.config.receptive_field
    data = load_speech_dataset(split_dir, normalizer=processor_normalizer(processor), min_samples=samples)
    data = filter_ctc_dataset(data, processor, model.num_frames, text_normalized=True).select(range(6))
    args = TrainingArguments(output_dir=out_path + ".trainer", report_to=[], use_cpu=True, ddp_timeout=120)
    trainer = CTCTrainer(model=model, args=args, eval_dataset=AudioDataset(data, min_samples=samples),
                         data_collator=CTCCollator(processor, model.num_frames, text_normalized=True),
                         processing_class=processor, max_tokens=max(data["num_samples"]))  # one utterance a batch
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        with open(out_path, "w") as handle:
            json.dump({**metrics, "processes": trainer.accelerator.num_processes}, handle)


if __name__ == "__main__":
    faulthandler.enable()
    main(*sys.argv[1:4])
