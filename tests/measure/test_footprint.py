"""deploykit/measure/footprint.py's fresh-process runner: what a child that fails says."""

from __future__ import annotations

import os

import pytest

from deploykit.measure.footprint import run_child


@pytest.fixture
def child_modules(tmp_path, monkeypatch):
    (tmp_path / "dk_segfaults.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    (tmp_path / "dk_raises.py").write_text("import sys\nprint('partial')\nsys.exit('no model at /nowhere')\n")
    (tmp_path / "dk_answers.py").write_text("import json, sys\nspec = json.load(sys.stdin)\n"
                                            "print('log line')\nprint(json.dumps({'twice': 2 * spec['n']}))\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))


def test_the_last_stdout_line_is_the_answer(child_modules):
    assert run_child("dk_answers", {"n": 21}, "x") == {"twice": 42}


def test_a_child_killed_by_a_signal_is_named_by_it(child_modules):
    with pytest.raises(RuntimeError, match=r"^a trial run of model.gguf failed: the process was killed by SIGSEGV$"):
        run_child("dk_segfaults", {}, "model.gguf", purpose="a trial run")


def test_a_failing_child_gives_its_last_stderr_line(child_modules):
    with pytest.raises(RuntimeError, match=r"^memory measurement of m failed: no model at /nowhere$"):
        run_child("dk_raises", {}, "m")
