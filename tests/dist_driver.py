"""Run by tests/test_training.py under torchrun: a few pretraining updates on pinned masks and negatives.

argv: output json path, global batch size. Every process takes its contiguous share of each global batch, so one
process with batch 2b sees exactly the utterances that two processes with batch b see together.
"""

import faulthandler
import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_config  # noqa: E402

from hf_wav2vec2 import W2V2ForPreTraining  # noqa: E402
from hf_wav2vec2.masking import compute_span_mask, sample_negatives  # noqa: E402
from hf_wav2vec2.training.pretraining import PretrainingState, pretraining_update  # noqa: E402


def main(out_path: str, global_batch: int, steps: int = 3, samples: int = 4000):
    accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(0)
    # The perplexity (so the diversity term) is a statistic of each process's batch, as in fairseq: weight 0 here.
    model = W2V2ForPreTraining(tiny_config(diversity_loss_weight=0.0, feature_penalty_weight=10.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    # argmax codes: the Gumbel noise is drawn per micro-batch, and one batch of 2b is not two batches of b
    accelerator.unwrap_model(model).quantizer.eval()
    state = PretrainingState()
    per_process = global_batch // accelerator.num_processes
    share = slice(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
    losses = []
    frames = int(accelerator.unwrap_model(model).num_frames(samples))
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)
        audio = torch.randn(global_batch, samples, generator=g)
        mask = compute_span_mask(torch.full((global_batch,), frames), frames, 0.65, 4, 2, require_same_masks=True,
                                 generator=g)
        negatives = sample_negatives(mask, 10, g)
        batch = {"input_values": audio[share], "attention_mask": torch.ones_like(audio[share], dtype=torch.long),
                 "mask_time_indices": mask[share], "sampled_negative_indices": negatives[share]}
        metrics = pretraining_update(accelerator, model, optimizer, scheduler, [batch], state, max_grad_norm=10.0)
        losses.append([metrics["loss"], metrics["contrastive_loss"], metrics["feature_penalty"], metrics["grad_norm"]])
    if accelerator.is_main_process:
        weights = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(model).parameters()])
        with open(out_path, "w") as f:
            json.dump({"losses": losses, "weights_sum": weights.double().sum().item(),
                       "weights_abs": weights.double().abs().sum().item()}, f)
    # Every rank waits for the main one to finish writing: a rank that tears down its gloo group while the other
    # is still working was seen to hang at exit (about 1 run in 5).
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    faulthandler.dump_traceback_later(240, exit=True)  # a hang prints every thread's stack instead of stalling CI
    main(sys.argv[1], int(sys.argv[2]))
