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


def _log_to(monkeypatch, *, terminal: bool = False):
    """console.log into a buffer 80 columns wide, as on a pipe (or a terminal, to see the styles)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setitem(console._quiet, "on", False)
    monkeypatch.setattr(console, "console", Console(file=buf, width=80, highlight=False, force_terminal=terminal,
                                                    color_system="standard" if terminal else None))
    return buf


def test_status_lines_print_user_text_as_written_on_one_line(monkeypatch):
    # a path's "[/b]" raised MarkupError (rc 1), "[v2]" was eaten (data[v2]/t.txt printed as data/t.txt), and lines
    # were cut at 80 columns on a pipe ("inputs are \ntruncated to 128 tokens")
    buf = _log_to(monkeypatch)
    long = "predict: " + "x" * 70 + " inputs are truncated to 128 tokens"
    for line in ("predict: files/in[/b].txt: 2 texts", "predict: files/data[v2]/t.txt [red]x[/red]", long):
        console.log(line)
    assert buf.getvalue().splitlines() == ["predict: files/in[/b].txt: 2 texts",
                                           "predict: files/data[v2]/t.txt [red]x[/red]", long]


def test_a_styled_head_keeps_its_style_and_the_rest_prints_as_written(monkeypatch):
    buf = _log_to(monkeypatch)
    console.log("quantize: wrote runs/data[v2]/[/green]x", head="green")  # cli.py's line after a stage
    console.log("prune: unchanged, skipped (runs/[v2])", style="dim")  # the pipeline's, a whole line dim
    assert buf.getvalue().splitlines() == ["quantize: wrote runs/data[v2]/[/green]x",
                                           "prune: unchanged, skipped (runs/[v2])"]
    buf = _log_to(monkeypatch, terminal=True)
    console.log("quantize: wrote runs/[v2]", head="green")
    console.log("[green]x[/green]")  # a tag in the text is text
    assert buf.getvalue() == "\x1b[32mquantize\x1b[0m: wrote runs/[v2]\n[green]x[/green]\n"


def test_user_text_keeps_its_colons_and_is_never_turned_into_emoji(monkeypatch, capsys):
    # the one console deploykit prints through, serve's lines included; rich's emoji codes turned
    # "run:ok:1/m:warning:x" into "run🆗1/m⚠x" (markup=False does not stop them)
    monkeypatch.setitem(console._quiet, "on", False)
    console.warn("warning: run:ok:1/m:warning:x has no manifest")
    console.log("predict: read run:ok:1/m:warning:x", head="bold")
    assert _err(capsys) == ("warning: run:ok:1/m:warning:x has no manifest "
                            "predict: read run:ok:1/m:warning:x")
