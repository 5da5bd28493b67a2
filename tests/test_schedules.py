"""The run-length-proportional Gumbel temperature schedule: exactly the paper's at 400k updates, the same shape at
any run length (the floor reached at the same fraction of the run)."""

import math

import pytest

from hf_wav2vec2 import W2V2Config
from hf_wav2vec2.training.schedules import PAPER_PRETRAINING_UPDATES, gumbel_temperature


@pytest.mark.parametrize("preset", ["base", "large_lv60"])
def test_proportional_schedule_is_the_papers_at_400k_updates(preset):
    config = W2V2Config.from_preset(preset)
    for step in (0, 1, 1000, 100_000, 277_258, 277_259, 399_999, 400_000):
        paper = max(config.gumbel_temperature_start * 0.999995**step, config.gumbel_temperature_end)
        assert gumbel_temperature(step, config, run_steps=400_000) == pytest.approx(paper, rel=1e-12)
        assert gumbel_temperature(step, config) == pytest.approx(paper, rel=1e-12)


def test_proportional_schedule_reaches_the_floor_at_the_papers_fraction_of_any_run():
    config = W2V2Config.base()  # 2 -> 0.5 at 0.999995: floor after ln(4) / -ln(0.999995) = 277,259 updates
    floor_fraction = math.log(4) / -math.log(0.999995) / PAPER_PRETRAINING_UPDATES  # 0.693
    for run in (400, 1000, 40_000):
        floor_step = math.ceil(floor_fraction * run)
        assert gumbel_temperature(floor_step, config, run_steps=run) == 0.5
        assert gumbel_temperature(floor_step - 2, config, run_steps=run) > 0.5
        # halfway through the run, tau is where the paper's is at 200k updates
        assert gumbel_temperature(run // 2, config, run_steps=run) == pytest.approx(2 * 0.999995**200_000)
    assert gumbel_temperature(400, config) > 1.99  # the paper's schedule barely moves in a short run
