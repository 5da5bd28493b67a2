"""The README's commands against the programs they call: every option a command passes exists in that program
(or in TrainingArguments for train_ctc.py), so that the README cannot drift from the code. The commands themselves
are run by `make default` (the default-corpus ones) and recorded in docs/experiments.md."""

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# how a README command names a program; the top-level scripts run as files, the modules with -m
SCRIPTS = ("train_pretrain.py", "train_ctc.py", "evaluate_ctc.py", "transcribe.py")
MODULES = ("hf_wav2vec2.ngram", "hf_wav2vec2.export", "hf_wav2vec2.convert_fairseq")
PROGRAMS = (*SCRIPTS, *MODULES)


def readme_commands() -> list[tuple[str, list[str]]]:
    """(program, options) of every command in the README's bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("#", 1)[0])
            program = next((w if w in PROGRAMS else words[i + 1] for i, w in enumerate(words)
                            if w in PROGRAMS or (w == "-m" and i + 1 < len(words) and words[i + 1] in PROGRAMS)),
                           None)
            if program is not None:
                commands.append((program, [w.split("=")[0] for w in words if w.startswith("--")]))
    return commands


def test_the_readme_has_commands_for_every_program():
    assert {program for program, _ in readme_commands()} == set(PROGRAMS)


def _help(program: str, monkeypatch, capsys) -> str:
    """What ``program --help`` prints, run in this process (as ``python program`` or ``python -m program``)."""
    monkeypatch.setattr(sys, "argv", [program, "--help"])
    with pytest.raises(SystemExit) as stop:
        if program in SCRIPTS:
            runpy.run_path(str(ROOT / program), run_name="__main__")
        else:
            runpy.run_module(program, run_name="__main__", alter_sys=False)
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_option_of_a_readme_command_exists(program, monkeypatch, capsys):
    options = {option for name, used in readme_commands() if name == program for option in used}
    options -= {"--multi_gpu", "--num_processes", "--mixed_precision"}  # accelerate launch's own
    known = set(re.findall(r"(--[A-Za-z0-9_]+)", _help(program, monkeypatch, capsys)))
    assert options <= known, sorted(options - known)
