"""Distributed normalisation and exact resumption of pretraining."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)


def _run(cmd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(tmp_path):
    _run([sys.executable, os.path.join(HERE, "dist_driver.py"), str(tmp_path / "one.json"), "4"])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
          os.path.join(HERE, "dist_driver.py"), str(tmp_path / "two.json"), "4"])
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for a, b in zip(one["losses"], two["losses"]):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert one["weights_sum"] == pytest.approx(two["weights_sum"], rel=1e-6)
    assert one["weights_abs"] == pytest.approx(two["weights_abs"], rel=1e-6)
