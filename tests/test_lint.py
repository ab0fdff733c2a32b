"""The source lints clean under pyproject.toml's [tool.ruff] rules (pyflakes and syntax errors): an unused
import, an undefined name or a redefinition fails the suite, as CI runs it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "deploykit", "tests", "bench", "recipes"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert "No module named ruff" not in done.stderr, "ruff is missing: pip install -e '.[dev]'"
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
