"""hf_wav2vec2 vs transformers' Wav2Vec2, side by side: same config, same weights, same audio.

Usage:
    make bench        # = python benchmarks/bench_vs_transformers.py --compile (inductor needs a C++ compiler on CPU)
    python benchmarks/bench_vs_transformers.py --only tiny --dtype fp32
    python benchmarks/bench_vs_transformers.py --device cuda --iters 20 --warmup 5
    python benchmarks/bench_vs_transformers.py --device cuda --only base --dtype bf16   # + MFU (not yet run on a GPU)
    python benchmarks/bench_vs_transformers.py --only base,ctc --dtype bf16
    python benchmarks/bench_vs_transformers.py --only tiny --dtype fp32 --compile --skip_transformers

Cases (``--only`` takes a comma-separated subset of the names):
    tiny  pretraining train step, W2V2Config.tiny(), 8 x 4 s
    base  pretraining train step, W2V2Config.base(), 2 x 8 s
    ctc   CTC inference, W2V2Config.base(vocab_size=32), 1 x 10 s
each in fp32 and with ``torch.autocast(device_type, dtype=torch.bfloat16)`` (``--dtype fp32|bf16|both``). On a CPU
without bf16 instructions (no AVX512-BF16 or AMX; an AVX2 AMD EPYC in our measurements) torch emulates bf16, several
times slower than fp32, so ``both`` runs only fp32 there (``--dtype bf16`` runs bf16 anyway).

Method:
- Weights: ours is built once per model (seed 0) and ``save_pretrained`` to a temporary folder; both
  ``hf_wav2vec2`` and ``transformers.Wav2Vec2For*`` load that folder with ``from_pretrained`` (our config writes
  every field, so transformers reads the same model, dropout and layerdrop included).
- LayerDrop: BASE drops each of its 12 Transformer blocks with probability 0.05, so a step runs 10-12 blocks, each
  about 5% of a step. Until 2026-12-07 each implementation drew them from its own RNG state, and with 3 timed steps
  the luck of the draw moved a ratio by 5-10% (ours ran 11.7 blocks a step against transformers' 10.7 in one run).
  Now the worker draws the plan of iteration i from a generator seeded with ``SEED + i`` (LayerDrop's probability,
  the same in every implementation) and gives it to ours as its ``layer_skip`` argument; transformers' encoder,
  which has no such argument, gets layerdrop 0 in its config and only the blocks to run. A skipped block costs
  nothing in either implementation, as in their own LayerDrop. A note lists the blocks each timed step ran.
- Train step = forward + backward of the summed loss + ``AdamW.step`` (fused, in both: ``train_pretrain.py``'s
  optimizer and the Trainer's default) + ``zero_grad``, ``model.train()``, Gumbel
  temperature set to the same value in both. Ours samples its masks and negatives itself (torch, on the device);
  transformers' step includes ``_compute_mask_indices`` + ``_sample_negative_indices`` (numpy, the config's
  mask_time_prob and mask_time_length) and the copy to the device, as a user of transformers has to do; that time
  is also shown apart.
- Iteration i feeds the same audio (seeded ``torch.randn``) to both models.
- ``--compile`` adds a third implementation, ours after ``model.compile_stages()`` (torch.compile, inductor, default
  mode: feature encoder, projection, positional conv and blocks compiled; sampling, quantizer and losses eager).
  Compilation happens in the first warm-up step (at least one is run); that step's time minus the median step is
  printed as the compile time, and a second table compares compiled with eager. ``--skip_transformers`` leaves
  transformers out (only with ``--compile``).
- The header and the footer give the machine's fp32 matmul rate (2048 x 2048, GFLOP/s) at that moment: on a
  shared machine it shows how much of the CPU the workers got.
- Each (case, dtype, implementation) runs in its own subprocess: warm-up iterations, then timed iterations; the
  median is reported as audio-seconds processed per wall-clock second. The implementations of a (case, dtype) run
  at the same time but take their steps in turns, one computing at a time (ours, theirs, [compiled], then the
  reverse order, ...): on a shared CPU whose speed moves 20-50% within minutes, running them one after the other
  let that drift into the ratio (BASE bf16 gave 1.51x and 1.93x on one day). A second ratio, the median over
  iterations of the per-turn ratio, is printed as a note.
- Model FLOPs: after the timed steps, each eager worker runs one more step under ``FlopCount`` (the formulas of
  ``torch.utils.flop_counter``: matmuls, convolutions, attention; forward and backward). Transformers' count is
  the model's FLOPs for both rows (ours is printed in a note; on CPU it is lower, as the counter sees only the
  small products of our FFT positional convolution, ``kernels_fft.conv1d_same_channels_last``): model TFLOP/s = that
  count / median step time, and for bf16 on a GPU the model FLOPs utilisation against its dense bf16 peak
  (``BF16_PEAK_TFLOPS``, or ``--peak_tflops``). The counting steps also take turns: until 2026-12-07 a worker
  began its own as soon as its last step ended, while the other implementation took its last timed step, which
  then ran 5-10x slower (ours, in the BASE cases: one of three timed steps).
- Peak memory is the growth above the loaded model (weights + audio) over the warm-up and timed steps, so it
  counts gradients, AdamW state, activations and allocator overhead. CUDA: ``max_memory_allocated`` minus
  ``memory_allocated`` at that point (peak stats reset there). CPU: ``VmHWM`` (peak RSS) minus ``VmRSS``, after
  resetting ``VmHWM`` by writing "5" to ``/proc/self/clear_refs``. A second row subtracts gradients + AdamW state
  (3 x parameter bytes, the same in both) to show what the activations and temporaries take.
- On CPU, glibc returns big freed buffers to the OS after each step and page-faults them back on the next, which
  costs about as much as the model (see DESIGN.md). Our training scripts run with
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (``hf_wav2vec2.training.allocator``); every worker, ours and
  transformers' alike, is started with it too, so both run under the same allocator settings.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from hf_wav2vec2.training.precision import cpu_computes_bf16

RESULT_MARK = "BENCH_RESULT "
READY_MARK = "BENCH_READY"
STEP_MARK = "BENCH_STEP"
SAMPLE_RATE = 16_000
SEED = 0


# ------------------------------------------------------------------------------------------------- 1. cases
@dataclass(frozen=True)
class Case:
    name: str  # the --only token
    title: str
    kind: str  # "train" (pretraining step) or "ctc" (inference)
    preset: str  # W2V2Config preset
    batch: int
    seconds: float
    # Default iterations (warm-up, timed) on CPU; CUDA uses (5, 20). Sized so that the whole default run stays
    # within ~10 minutes on 2 CPU cores.
    cpu_iters: tuple[int, int]

    @property
    def audio_seconds(self) -> float:
        return self.batch * self.seconds


CASES = (
    Case("tiny", "TINY 8x4s train", "train", "tiny", 8, 4.0, cpu_iters=(2, 5)),
    Case("base", "BASE 2x8s train", "train", "base", 2, 8.0, cpu_iters=(1, 3)),
    Case("ctc", "BASE 1x10s CTC infer", "ctc", "base", 1, 10.0, cpu_iters=(1, 5)),
)
# Dense bf16 tensor-core peaks (TFLOP/s, NVIDIA's data sheets, without sparsity) by a part of the device name, for
# model FLOPs utilisation; other devices need --peak_tflops.
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0),
                    ("A10G", 70.0))
# ours / transformers: speed ratio at least this much (dtype -> target); memory ratio at most MEMORY_TARGET.
SPEED_TARGETS = {("train", "fp32"): 1.3, ("train", "bf16"): 2.0, ("ctc", "fp32"): 1.0}
MEMORY_TARGET = 0.65


def our_config(case: Case):
    from hf_wav2vec2 import W2V2Config

    return W2V2Config.base(vocab_size=32) if case.kind == "ctc" else W2V2Config.from_preset(case.preset)


# ---------------------------------------------------------------------------------------- 2. shared weights
def save_weights(case: Case, folder: str) -> None:
    """Build ours (seed 0) and save it; both implementations load this folder."""
    from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining

    torch.manual_seed(SEED)
    cls = W2V2ForCTC if case.kind == "ctc" else W2V2ForPreTraining
    cls(our_config(case)).save_pretrained(folder)


def load_model(case: Case, impl: str, folder: str, device: str) -> torch.nn.Module:
    if impl in ("ours", "ours-compiled"):
        from hf_wav2vec2 import W2V2ForCTC as CTC
        from hf_wav2vec2 import W2V2ForPreTraining as PreTraining
    else:
        from transformers import Wav2Vec2ForCTC as CTC
        from transformers import Wav2Vec2ForPreTraining as PreTraining
    cls = CTC if case.kind == "ctc" else PreTraining
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise RuntimeError(f"{impl} did not load the shared weights exactly: {info}")
    return model.to(device)


# ------------------------------------------------------------------------------------- 3. memory probes
def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


class PeakMemory:
    """Peak memory growth (MiB) above the moment of ``start()``; see the module docstring for the method."""

    def __init__(self, device: str):
        self.device = device
        self.method = ""

    def start(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
            self.method = "cuda max_memory_allocated - memory_allocated"
            return
        self.baseline = _proc_status_mib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM - VmRSS after /proc/self/clear_refs reset"
        except OSError:
            self.method = "VmHWM - VmRSS (clear_refs unavailable: VmHWM includes model loading)"

    def peak_growth(self) -> float:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20 - self.baseline
        return _proc_status_mib("VmHWM") - self.baseline


# ------------------------------------------------------------------------------------------ 4. one worker
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class FlopCount(TorchDispatchMode):
    """Matmul, convolution and attention FLOPs of the ops run under it, by ``torch.utils.flop_counter``'s formulas.
    Not its ``FlopCounterMode``: that one's module hooks fail in a backward that calls ``autograd.grad`` (ours do).
    Its formulas leave out the CPU flash-attention kernels and in-place products (``addmm_``, which our convolutions
    use); those are counted here as the CUDA kernels and the out-of-place products are. Its convolution backward
    formula ignores groups in the weight gradient (torch 2.13: the positional convolution's, 16 groups, counted 16x:
    121 G instead of 7.5 for BASE 2 x 8 s, a seventh of the step's count); it is counted here by
    :func:`conv_backward_flops`."""

    IN_PLACE = {torch.ops.aten.addmm_: torch.ops.aten.addmm, torch.ops.aten.baddbmm_: torch.ops.aten.baddbmm}

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            self.total += sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)  # query, key, value
        elif packet is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
            self.total += sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape)
        elif packet is torch.ops.aten.convolution_backward:
            grad_out, x, weight = args[:3]
            self.total += conv_backward_flops(grad_out.shape, x.shape, weight.shape, args[7], args[10])
        else:
            packet = self.IN_PLACE.get(packet, packet)  # x.addmm_(a, b) costs what addmm(x, a, b) does
            if packet in flop_registry:
                self.total += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def conv_backward_flops(grad_out_shape, x_shape, weight_shape, transposed: bool, output_mask) -> int:
    """FLOPs of a convolution's input and weight gradients: each does the forward's multiply-adds, one per (output
    position, weight element of its group) pair, i.e. per output element (per input element, transposed) times the
    weight's elements per output channel (C_in / groups x kernel)."""
    positions = math.prod(x_shape if transposed else grad_out_shape)
    return 2 * positions * math.prod(weight_shape[1:]) * (int(output_mask[0]) + int(output_mask[1]))


def make_audio(case: Case, iteration: int, device: str) -> torch.Tensor:
    """The same (B, L) audio for both implementations at a given iteration."""
    g = torch.Generator().manual_seed(1000 + iteration)
    return torch.randn(case.batch, int(case.seconds * SAMPLE_RATE), generator=g).to(device)


def run_worker(spec: dict) -> dict:
    """Load one implementation of one case and time it; runs in its own process."""
    import numpy as np
    import transformers

    transformers.logging.set_verbosity_error()  # "model of type w2v2 to instantiate wav2vec2" is expected
    case = next(c for c in CASES if c.name == spec["case"])
    impl, device, dtype = spec["impl"], spec["device"], spec["dtype"]
    warmup, iters = spec["warmup"], spec["iters"]
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    model = load_model(case, impl, spec["weights"], device)
    if impl == "ours-compiled":
        model.compile_stages()  # inductor: compiles in the first (warm-up) step
    cfg = model.config
    autocast = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if dtype == "bf16"
                else contextlib.nullcontext())
    audios = [make_audio(case, i, device) for i in range(warmup + iters)]
    param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    num_samples = audios[0].shape[1]
    frames = int(model.num_frames(num_samples) if impl != "transformers"
                 else model._get_feat_extract_output_lengths(num_samples))  # T
    extra = {}

    if case.kind == "ctc":
        model.eval()

        def step(x, counting=False):
            # no_grad when counting FLOPs: under inference_mode, linear, conv1d and attention reach the counter
            # whole, without the matmuls and convolutions its formulas know
            with torch.no_grad() if counting else torch.inference_mode(), autocast:
                return {"logit_abs_mean": model(x).logits.float().abs().mean()}
    else:
        model.train()
        model.set_gumbel_temperature(cfg.gumbel_temperature_start)
        # fused in both: train_pretrain.py's optimizer and the Trainer's default (adamw_torch_fused)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        if impl != "transformers":
            generator = torch.Generator(device).manual_seed(SEED)

            def forward(x):
                out = model(x, generator=generator, layer_skip=layer_skip[0])
                return out.loss, out.contrastive_loss_sum, out.num_masked
        else:
            from transformers.models.wav2vec2.modeling_wav2vec2 import (
                _compute_mask_indices,
                _sample_negative_indices,
            )

            extra["numpy_sampling_s"] = []

            def forward(x):
                t0 = time.perf_counter()
                mask = _compute_mask_indices((x.shape[0], frames), mask_prob=cfg.mask_time_prob,
                                             mask_length=cfg.mask_time_length, min_masks=cfg.mask_time_min_masks)
                negatives = _sample_negative_indices((x.shape[0], frames), cfg.num_negatives,
                                                     mask_time_indices=mask)
                extra["numpy_sampling_s"].append(time.perf_counter() - t0)
                mask_t = torch.from_numpy(mask).to(device)
                negatives_t = torch.from_numpy(negatives).long().to(device)
                out = model(x, mask_time_indices=mask_t, sampled_negative_indices=negatives_t)
                return out.loss, out.contrastive_loss, mask_t.sum()

        def step(x, counting=False):
            with autocast:
                loss, contrastive, num_masked = forward(x)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return {"masked_frac": num_masked / (x.shape[0] * frames),
                    "contrastive_per_frame": contrastive.detach() / num_masked}

    # LayerDrop by the driver's plan: iteration i runs the same blocks in every implementation (the docstring)
    plan_layerdrop = case.kind == "train" and cfg.layerdrop > 0
    layer_skip = [None]  # ours takes the plan as an argument (None: its own draw)
    if plan_layerdrop:
        encoder, layerdrop = model.wav2vec2.encoder, cfg.layerdrop
        all_layers = list(encoder.layers)
        if impl == "transformers":
            cfg.layerdrop = 0.0  # its encoder reads the config at each forward

        def run_blocks(iteration: int) -> int:
            rng = torch.Generator().manual_seed(SEED + iteration)
            skip = (torch.rand(len(all_layers), generator=rng) < layerdrop).tolist()
            if impl == "transformers":  # no such argument: its encoder gets only the blocks to run
                encoder._modules["layers"] = torch.nn.ModuleList(
                    [layer for layer, skipped in zip(all_layers, skip) if not skipped])
            else:
                layer_skip[0] = skip
            return len(skip) - sum(skip)
    blocks = []

    memory = PeakMemory(device)
    memory.start()
    times, cpu_times, stats, warmup_times = [], [], [], []
    print(READY_MARK, flush=True)
    for i, x in enumerate(audios):
        sys.stdin.readline()  # the driver's "go": the implementations of a case take their steps in turn
        sync(device)
        blocks_run = run_blocks(i) if plan_layerdrop else None
        t0, c0 = time.perf_counter(), time.process_time()
        out = step(x)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            blocks.append(blocks_run)
        else:
            warmup_times.append(time.perf_counter() - t0)
        stats.append({k: float(v) for k, v in out.items()})
        del out
        print(STEP_MARK, flush=True)
    peak = memory.peak_growth()
    sys.stdin.readline()  # the driver's "go" for the FLOP count too: it would slow another worker's timed step
    flops = None
    if impl != "ours-compiled":  # compiled code runs outside the dispatcher the counter listens on
        if plan_layerdrop:
            run_blocks(0)  # the blocks of the first iteration, whose audio it is
        with FlopCount() as counter:
            step(audios[0], counting=True)  # one more step, untimed
        flops = counter.total

    median = statistics.median(times)
    result = dict(
        case=case.name, impl=impl, dtype=dtype, times=times, median_s=median, warmup_times=warmup_times,
        compile_s=warmup_times[0] - median if impl == "ours-compiled" else None,
        cpu_s=statistics.median(cpu_times),
        audio_s_per_s=case.audio_seconds / median, peak_mib=peak, param_mib=param_mib,
        memory_method=memory.method, threads=torch.get_num_threads(), flops=flops,
        attn=getattr(cfg, "_attn_implementation", None), blocks=blocks if plan_layerdrop else None,
        stats={k: statistics.mean(s[k] for s in stats) for k in stats[0]},
    )
    if "numpy_sampling_s" in extra:
        result["numpy_sampling_s"] = statistics.median(extra["numpy_sampling_s"][warmup:])
    return result


# ------------------------------------------------------------------------------------------- 5. the driver
class Worker:
    """One (case, dtype, implementation) in its own process (``--worker``), which takes a step each time it is told
    to: the driver alternates the implementations of a case step by step, so that a change in the machine's speed
    (this shared CPU moves 20-50% within minutes) reaches all of them alike."""

    def __init__(self, spec: dict):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        # the same allocator settings for both implementations: what our training scripts run with
        env = {**os.environ, "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.buffer = b""

    def line(self, marker: str, deadline: float) -> str:
        """The rest of the worker's next stdout line that starts with ``marker``."""
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                text = raw.decode(errors="replace")
                if text.startswith(marker):
                    return text[len(marker):]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if select.select([self.proc.stdout], [], [], remaining)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise EOFError
                self.buffer += chunk

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def error(self, what: str) -> dict:
        self.proc.kill()
        self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-6:]
        return {"error": f"{what} (exit code {self.proc.returncode}): " + " | ".join(tail)}


def run_in_turns(specs: list[dict], timeout: float) -> list[dict]:
    """Run the workers of one case and dtype together, one step at a time in turns (the order alternates between
    steps); each result is that worker's, or ``{"error": ...}``. Only one of them computes at any moment."""
    deadline = time.monotonic() + timeout
    workers = [Worker(spec) for spec in specs]
    results: list[dict | None] = [None] * len(workers)

    def attempt(i: int, action):
        """``action(worker i)``, unless that worker has failed; a failure becomes its result."""
        if results[i] is not None:
            return None
        try:
            return action(workers[i])
        except (TimeoutError, EOFError, BrokenPipeError) as error:
            what = f"timed out after {timeout:.0f} s" if isinstance(error, TimeoutError) else "worker stopped"
            results[i] = workers[i].error(what)
            return None

    for i in range(len(workers)):
        attempt(i, lambda w: w.line(READY_MARK, deadline))
    steps = specs[0]["warmup"] + specs[0]["iters"]
    for step in range(steps):
        order = range(len(workers)) if step % 2 == 0 else reversed(range(len(workers)))
        for i in order:
            attempt(i, lambda w: (w.go(), w.line(STEP_MARK, deadline)))
    for i in range(len(workers)):  # the untimed FLOP-counting step, one worker at a time, then the result
        line = attempt(i, lambda w: (w.go(), w.line(RESULT_MARK, deadline))[1])
        if line is not None:
            results[i] = json.loads(line)
    for worker in workers:  # each has printed its result (or failed): nothing is left to wait for
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()
        worker.proc.stdin.close()
        worker.proc.stdout.close()
        worker.stderr.close()
    return results


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            return re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M).group(1)
    except (OSError, AttributeError):
        return platform.processor() or "cpu"


def matmul_gflops(device: str, n: int = 2048, repeats: int = 10) -> float:
    """fp32 (n x n) @ (n x n) rate in GFLOP/s, with this process's threads: what the CPU gives right now."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def bf16_peak_tflops(device: str) -> float | None:
    """The device's dense bf16 peak from ``BF16_PEAK_TFLOPS``, or None (CPUs, unlisted GPUs)."""
    if not device.startswith("cuda"):
        return None
    name = device_name(device)
    return next((peak for part, peak in BF16_PEAK_TFLOPS if part in name), None)


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default: per case, see CASES)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: per case)")
    parser.add_argument("--only", default="tiny,base,ctc", help="comma-separated subset of: tiny, base, ctc")
    parser.add_argument("--dtype", default="both", choices=("fp32", "bf16", "both"))
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds allowed per case and dtype (its implementations run in turns)")
    parser.add_argument("--compile", action="store_true",
                        help="also time ours after model.compile_stages() (torch.compile, inductor)")
    parser.add_argument("--skip_transformers", action="store_true",
                        help="do not run transformers (with --compile: compiled vs eager only)")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for the bf16 rows' model FLOPs utilisation (default: dense "
                             "bf16 tensor-core peak of a known GPU: H100, H200, A100, ...; none on CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # child process: one measurement, one JSON line
        print(RESULT_MARK + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return

    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        parser.error(f"--only: unknown case(s) {sorted(unknown)}; choose from {[c.name for c in CASES]}")
    cases = [c for c in CASES if c.name in wanted]
    if args.skip_transformers and not args.compile:
        parser.error("--skip_transformers leaves nothing to compare without --compile")
    impls = ("ours",) + (() if args.skip_transformers else ("transformers",)) + (("ours-compiled",) if args.compile
                                                                                 else ())
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    on_cuda = args.device.startswith("cuda")
    emulated_bf16 = not on_cuda and not cpu_computes_bf16()
    if emulated_bf16 and args.dtype == "both":  # hours of emulated bf16 steps that say nothing about either model
        dtypes = ["fp32"]
    peak_tflops = args.peak_tflops or bf16_peak_tflops(args.device)

    # 5.1 header
    print("hf_wav2vec2 vs transformers Wav2Vec2 (ours / theirs: speed ratio > 1 is faster, memory ratio < 1 is less)")
    print(f"device        : {args.device} ({device_name(args.device)})")
    print(f"versions      : torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}")
    print(f"threads       : {torch.get_num_threads()} intra-op (os.cpu_count()={os.cpu_count()})")
    print(f"allocator     : every worker with GLIBC_TUNABLES="
          f"{os.environ.get('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')}")
    load = os.getloadavg()[0]
    busy = "  <- other processes are using the CPU: timings will be noisy" if not on_cuda and load > 0.5 else ""
    print(f"load average  : {load:.2f} (1 min) at start{busy}")
    print(f"matmul rate   : {matmul_gflops(args.device):.0f} GFLOP/s (fp32 2048 x 2048) at start")
    if emulated_bf16:
        print("bf16          : this CPU has no bf16 instructions (AVX512-BF16 or AMX): torch emulates bf16, several")
        print("                times slower than fp32; " + ("bf16 rows skipped (--dtype bf16 runs them anyway)"
                                                            if "bf16" not in dtypes else "the bf16 rows say little"))
    print("speed         : audio-seconds per wall-clock second, median of the timed iterations; train = forward +")
    print("                backward + AdamW step; transformers' train step includes its numpy mask/negative sampling")
    print("memory        : peak growth above the loaded model during the steps; "
          + ("torch.cuda.max_memory_allocated" if on_cuda else "peak RSS (VmHWM reset via /proc/self/clear_refs)"))
    print("model FLOPs   : matmul, conv and attention FLOPs of one step (forward + backward for train), counted with")
    print("                torch.utils.flop_counter's formulas on transformers' model, divided by each step time"
          + (f"; MFU against a bf16 peak of {peak_tflops:g} TFLOP/s" if peak_tflops else ""))
    if not on_cuda:
        print("CPU ms/step   : median process CPU time (user + system, all threads) of a step; about threads x wall")
        print("                time when the machine is otherwise idle, and less disturbed when it is not")
    print("isolation     : each (case, dtype, implementation) in its own subprocess; those of a (case, dtype) take")
    print("                their steps in turns (ours, theirs, ..., order alternating), one computing at a time")
    print(flush=True)

    # 5.2 measure
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_w2v2_") as tmp:
        for case in cases:
            folder = os.path.join(tmp, case.name)
            save_weights(case, folder)
            warmup, iters = case.cpu_iters if not on_cuda else (5, 20)
            warmup = args.warmup if args.warmup is not None else warmup
            if args.compile:
                warmup = max(warmup, 1)  # the first step compiles
            iters = args.iters if args.iters is not None else iters
            for dtype in dtypes:
                specs = [dict(case=case.name, impl=impl, dtype=dtype, device=args.device, warmup=warmup,
                              iters=max(iters, 1), weights=folder) for impl in impls]
                t0 = time.perf_counter()
                for impl, res in zip(impls, run_in_turns(specs, args.timeout)):
                    results[case.name, dtype, impl] = res
                    status = res.get("error") or (f"{res['audio_s_per_s']:.2f} audio-s/s, "
                                                  f"{res['median_s'] * 1e3:.0f} ms/step"
                                                  + (f", compile {res['compile_s']:.1f} s"
                                                     if res.get("compile_s") is not None else ""))
                    print(f"  [{time.perf_counter() - t0:5.0f} s] {case.title} {dtype} {impl}: {status}", flush=True)

    # 5.3 tables
    rows = [["case", "ours", "transformers", "ratio", "target", "met"]]
    notes = []
    for case in cases:
        for dtype in dtypes:
            if args.skip_transformers:
                break
            ours, theirs = results[case.name, dtype, "ours"], results[case.name, dtype, "transformers"]
            label = f"{case.title} {dtype}"
            if "error" in ours or "error" in theirs:
                rows.append([label, "error" if "error" in ours else "ok", "error" if "error" in theirs else "ok",
                             "-", "-", "-"])
                notes += [f"{label} {name}: {r['error']}" for name, r in (("ours", ours), ("transformers", theirs))
                          if "error" in r]
                continue
            target = SPEED_TARGETS.get((case.kind, dtype))
            ratio = ours["audio_s_per_s"] / theirs["audio_s_per_s"]
            met = "-" if target is None else ("yes" if ratio >= target else "NO")
            rows.append([f"{label} [audio-s/s]", f"{ours['audio_s_per_s']:.2f}", f"{theirs['audio_s_per_s']:.2f}",
                         fmt_ratio(ratio), f">={target}x" if target else "-", met])
            rows.append([f"{label} [ms/step]", f"{ours['median_s'] * 1e3:.0f}", f"{theirs['median_s'] * 1e3:.0f}",
                         fmt_ratio(ours["median_s"] / theirs["median_s"]), "-", "-"])
            if not on_cuda:  # process CPU time: less sensitive than wall time to other processes on the machine
                rows.append([f"{label} [CPU ms/step]", f"{ours['cpu_s'] * 1e3:.0f}", f"{theirs['cpu_s'] * 1e3:.0f}",
                             fmt_ratio(ours["cpu_s"] / theirs["cpu_s"]), "-", "-"])
            model_flops = theirs.get("flops")  # the same model: the reference implementation's count for both
            if model_flops:
                rows.append([f"{label} [model TFLOP/s]", f"{model_flops / ours['median_s'] / 1e12:.3g}",
                             f"{model_flops / theirs['median_s'] / 1e12:.3g}", "-", "-", "-"])
                if dtype == "bf16" and peak_tflops:
                    rows.append([f"{label} [MFU, peak {peak_tflops:g}]",
                                 f"{model_flops / ours['median_s'] / 1e12 / peak_tflops:.1%}",
                                 f"{model_flops / theirs['median_s'] / 1e12 / peak_tflops:.1%}", "-", "-", "-"])
                notes.append(f"{label}: FLOPs of a step (torch.utils.flop_counter's formulas): transformers "
                             f"{model_flops / 1e9:.1f} G, ours {(ours.get('flops') or 0) / 1e9:.1f} G")
            mem_ratio = ours["peak_mib"] / theirs["peak_mib"] if theirs["peak_mib"] > 0 else None
            if case.kind == "train":
                met = "-" if mem_ratio is None else ("yes" if mem_ratio <= MEMORY_TARGET else "NO")
                rows.append([f"{label} [peak MiB]", f"{ours['peak_mib']:.0f}", f"{theirs['peak_mib']:.0f}",
                             fmt_ratio(mem_ratio), f"<={MEMORY_TARGET}x", met])
                fixed = 3 * ours["param_mib"]  # gradients + AdamW exp_avg, exp_avg_sq
                act_ours, act_theirs = ours["peak_mib"] - fixed, theirs["peak_mib"] - fixed
                rows.append([f"{label} [peak - grads - AdamW MiB]", f"{act_ours:.0f}", f"{act_theirs:.0f}",
                             fmt_ratio(act_ours / act_theirs if act_theirs > 0 else None), "-", "-"])
                notes.append(
                    f"{label}: masked fraction ours {ours['stats']['masked_frac']:.3f} / theirs "
                    f"{theirs['stats']['masked_frac']:.3f}; contrastive loss per masked frame ours "
                    f"{ours['stats']['contrastive_per_frame']:.3f} / theirs "
                    f"{theirs['stats']['contrastive_per_frame']:.3f}; theirs' numpy sampling "
                    f"{theirs['numpy_sampling_s'] * 1e3:.1f} ms/step (inside its step time)")
            else:
                rows.append([f"{label} [peak MiB]", f"{ours['peak_mib']:.0f}", f"{theirs['peak_mib']:.0f}",
                             fmt_ratio(mem_ratio), "-", "-"])
                notes.append(f"{label}: mean |logit| ours {ours['stats']['logit_abs_mean']:.4f} / theirs "
                             f"{theirs['stats']['logit_abs_mean']:.4f} (same weights, same audio)")
            paired = statistics.median(t / o for o, t in zip(ours["times"], theirs["times"]))
            notes.append(f"{label}: iterations {len(ours['times'])} timed, in turns; per-step s ours "
                         f"{[round(t, 3) for t in ours['times']]} theirs {[round(t, 3) for t in theirs['times']]}; "
                         f"median of the per-turn speed ratios {paired:.2f}x"
                         + (f"; Transformer blocks run per step (LayerDrop, the same plan in both) ours "
                            f"{ours['blocks']} theirs {theirs['blocks']}"
                            if ours.get("blocks") and theirs.get("blocks") else ""))
    first = next((r for r in results.values() if "error" not in r), None)
    print()
    if first:
        attn = next((r['attn'] for (c, d, i), r in results.items() if i == 'transformers' and 'attn' in r), None)
        print(f"threads in workers: {first['threads']}; "
              + (f"transformers attention: {attn}; " if attn else "")
              + f"memory method: {first['memory_method']}")
    if not args.skip_transformers:
        print_table(rows)
    if args.compile:
        print("\nours compiled (compile_stages, inductor) vs ours eager; compile s = first warm-up step - median step")
        rows = [["case", "eager", "compiled", "ratio", "compile s"]]
        for case in cases:
            for dtype in dtypes:
                eager, compiled = results[case.name, dtype, "ours"], results[case.name, dtype, "ours-compiled"]
                label = f"{case.title} {dtype}"
                if "error" in eager or "error" in compiled:
                    rows.append([label, "error" if "error" in eager else "ok",
                                 "error" if "error" in compiled else "ok", "-", "-"])
                    notes += [f"{label} {name}: {r['error']}" for name, r in (("ours", eager),
                                                                             ("ours compiled", compiled))
                              if "error" in r]
                    continue
                rows.append([f"{label} [audio-s/s]", f"{eager['audio_s_per_s']:.2f}",
                             f"{compiled['audio_s_per_s']:.2f}",
                             fmt_ratio(compiled["audio_s_per_s"] / eager["audio_s_per_s"]), "-"])
                rows.append([f"{label} [ms/step]", f"{eager['median_s'] * 1e3:.0f}",
                             f"{compiled['median_s'] * 1e3:.0f}",
                             fmt_ratio(compiled["median_s"] / eager["median_s"]), f"{compiled['compile_s']:.1f}"])
                if not on_cuda:
                    rows.append([f"{label} [CPU ms/step]", f"{eager['cpu_s'] * 1e3:.0f}",
                                 f"{compiled['cpu_s'] * 1e3:.0f}", fmt_ratio(compiled["cpu_s"] / eager["cpu_s"]), "-"])
                rows.append([f"{label} [peak MiB]", f"{eager['peak_mib']:.0f}", f"{compiled['peak_mib']:.0f}",
                             fmt_ratio(compiled["peak_mib"] / eager["peak_mib"] if eager["peak_mib"] > 0 else None),
                             "-"])
                notes.append(f"{label}: per-step s eager {[round(t, 3) for t in eager['times']]} compiled "
                             f"{[round(t, 3) for t in compiled['times']]}; compiled warm-up steps "
                             f"{[round(t, 2) for t in compiled['warmup_times']]}")
        print_table(rows)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"matmul rate at end: {matmul_gflops(args.device):.0f} GFLOP/s (fp32 2048 x 2048)")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
