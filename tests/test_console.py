"""--quiet drops progress and status lines, never a warning (something the user should act on)."""

from deploykit import console


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_quiet_drops_status_lines_but_keeps_warnings(monkeypatch, capsys):
    monkeypatch.setitem(console._quiet, "on", True)
    console.log("finetune: epoch 1 accuracy 90.0")
    console.warn("warning: data/[train].tsv shares 5 rows with validation")
    err = _err(capsys)
    assert "epoch 1" not in err
    assert "warning: data/[train].tsv shares 5 rows" in err  # markup off: the brackets of a path print as written


def test_status_lines_print_when_not_quiet(monkeypatch, capsys):
    monkeypatch.setitem(console._quiet, "on", False)
    console.log("finetune: epoch 1 accuracy 90.0")
    console.warn("warning: x")
    assert _err(capsys) == "finetune: epoch 1 accuracy 90.0 warning: x"
