"""The real train_pretrain.py under its launchers: python, torchrun (two gloo processes on CPU), accelerate launch,
and FSDP (GPUs only: Accelerate 1.15 has no FSDP on CPU).

Oracle: one plain ``python`` process accumulating two micro-batches per update. Two processes with one micro-batch
each see the same utterances per update (Accelerate's sharded sampler gives process p the batches p, p + 2, ...) and
draw the same masks, negatives and Gumbel noise (keyed by the global micro-batch index), so with dropout and
LayerDrop at 0 their per-update losses and final weights must match it. Each run is a few updates of a tiny model on
eight 0.5 s files; a hung run is killed with SIGABRT (faulthandler prints every process's stack) and fails."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import free_port, tiny_config

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "train_pretrain.py")
TIMEOUT_S = 240


def _launch(launcher: list[str], folder, output, *extra) -> dict:
    """Run the script under ``launcher``; return its train_history.json."""
    argv = ["--dataset_name", str(folder / "audio"), "--config", str(folder / "config"), "--output_dir", str(output),
            "--max_steps", "3", "--save_steps", "2", "--logging_steps", "1", "--eval_steps", "1000",
            "--max_tokens", "16000", "--min_duration_s", "0.1", "--num_workers", "0", "--huge_pages", "false",
            *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PYTHONFAULTHANDLER": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the script must find CPU mode by itself
    process = subprocess.Popen([*launcher, SCRIPT, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        log, _ = process.communicate()
        pytest.fail(f"{launcher} hung for {TIMEOUT_S} s; stacks:\n{log[-6000:]}")
    assert process.returncode == 0, log[-6000:]
    return json.loads((output / "train_history.json").read_text())


PYTHON = [sys.executable]


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
            str(free_port())]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eight 0.5 s noise files (equal lengths: no cropping, no padding; 4 batches of 2 per epoch at 16000 samples)
    and a tiny config without dropout or LayerDrop."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("launch")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        sf.write(root / "audio" / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    config = tiny_config()
    assert config.layerdrop == 0 and config.hidden_dropout == config.feat_quantizer_dropout == 0
    config.save_pretrained(root / "config")
    return root


@pytest.fixture(scope="module")
def one_process(folder, tmp_path_factory):
    """The oracle: plain python, one process, two micro-batches per update."""
    output = tmp_path_factory.mktemp("one") / "run"
    return output, _launch(PYTHON, folder, output, "--gradient_accumulation_steps", "2")


def _weights(output) -> dict:
    from hf_wav2vec2 import W2V2ForPreTraining

    return dict(W2V2ForPreTraining.from_pretrained(output).state_dict())


def _assert_same_run(history, reference, output, reference_output, rel=1e-5):
    steps = [s for s, _ in history["history"]]
    assert steps == [s for s, _ in reference["history"]] == [1, 2, 3]
    for (_, loss), (_, expected) in zip(history["history"], reference["history"]):
        assert loss == pytest.approx(expected, rel=rel)
    ours, expected = _weights(output), _weights(reference_output)
    assert ours.keys() == expected.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], expected[name], rtol=rel, atol=1e-6, msg=name)


def _assert_main_process_wrote_alone(output):
    # one checkpoints folder, complete checkpoints only (a second "main" process once collided in partial-<step>)
    assert sorted(os.listdir(output / "checkpoints")) == ["checkpoint-2", "checkpoint-3"]
    for checkpoint in ("checkpoint-2", "checkpoint-3"):
        assert (output / "checkpoints" / checkpoint / "training_state.json").is_file()
    assert not [n for n in os.listdir(output) if n.startswith(("partial-", "checkpoint-"))]


def _accelerate_launch(n: int) -> list[str]:
    # On a machine without GPUs, --multi_gpu starts torchrun's processes and the script runs them on CPU (gloo).
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port())]


@pytest.mark.parametrize("launcher", [_torchrun, _accelerate_launch], ids=["torchrun", "accelerate_launch"])
def test_two_cpu_processes_equal_one_process_accumulating_two(launcher, folder, one_process, tmp_path):
    reference_output, reference = one_process
    assert reference["processes"] == 1
    output = tmp_path / "two"
    history = _launch(launcher(2), folder, output)
    assert history["processes"] == 2
    _assert_main_process_wrote_alone(output)
    _assert_same_run(history, reference, output, reference_output)


def test_torch_compile_option_gives_the_eager_run(folder, one_process, tmp_path):
    # --torch_compile_backend implies --torch_compile: compile_stages with aot_eager (no C++ compiler needed), the
    # same per-update losses and weights as the eager oracle.
    reference_output, reference = one_process
    output = tmp_path / "compiled"
    history = _launch(PYTHON, folder, output, "--gradient_accumulation_steps", "2", "--torch_compile_backend",
                      "aot_eager")
    _assert_same_run(history, reference, output, reference_output, rel=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=(
    "FSDP needs GPUs in Accelerate 1.15: on CPU, Accelerator(cpu=True) (or ACCELERATE_USE_CPU) makes the run "
    "MULTI_CPU and ignores the FSDP plugin (plain DDP); without it, torchrun's processes stay DistributedType.NO "
    "(independent copies); FullyShardedDataParallelPlugin(sync_module_states=True) raises 'no available devices'"))
def test_fsdp_writes_the_unsharded_final_folder_and_resumes(folder, tmp_path):
    fsdp = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]
    # the unsharded oracle on the same GPUs: one process accumulating two micro-batches
    unsharded = _launch(PYTHON, folder, tmp_path / "unsharded", "--gradient_accumulation_steps", "2")
    sharded = _launch(fsdp, folder, tmp_path / "sharded")
    _assert_main_process_wrote_alone(tmp_path / "sharded")
    # GPU convolutions may use TF32 and other algorithms per run: a looser tolerance than on CPU
    _assert_same_run(sharded, unsharded, tmp_path / "sharded", tmp_path / "unsharded", rel=1e-3)
    # resume the sharded run from its checkpoint-2: update 3 as in the unbroken sharded run
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "sharded" / "checkpoints" / "checkpoint-2", resumed / "checkpoints" / "checkpoint-2")
    fsdp[-1] = str(free_port())
    history = _launch(fsdp, folder, resumed, "--resume_from_checkpoint", "latest")
    _assert_same_run(history, sharded, resumed, tmp_path / "sharded", rel=1e-4)
