"""python -m alexnet_triton: the commands listed, and each one run through it."""
from __future__ import annotations

import subprocess

import pytest

from alexnet_triton import __main__ as entry
from alexnet_triton import progress
from train_support import PYTHON, ROOT, subprocess_env


def test_the_bare_package_lists_every_command():
    result = subprocess.run([PYTHON, "-m", "alexnet_triton"], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("prepare", "train", "evaluate", "predict", "neighbours", "sample-photos"):
        assert f"\n  {name} " in result.stdout, name


@pytest.mark.parametrize("name", list(entry.COMMANDS))
def test_each_command_runs_through_the_package(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        entry.main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_command_is_one_line_and_status_2(capsys):
    assert entry.main(["fit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'fit'" in err


def test_progress_bars_only_for_a_person_watching(monkeypatch, capsys):
    # Under pytest stdout and stderr are captured, as in a log file: no bar.
    assert not progress.interactive() and progress.progress_bar(10, "x", "img") is None
    monkeypatch.setattr(progress, "interactive", lambda: True)
    bar = progress.progress_bar(10, "x", "img")
    assert bar is not None
    bar.close()
    assert progress.progress_bar(10, "x", "img", enabled=False) is None
    assert [progress.plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch",
                                                                "2 epochs"]
    assert progress.rounded({"a": 0.05400000000000005, "b": [1 / 3], "c": 2}) == \
        {"a": 0.054, "b": [0.333333], "c": 2}
