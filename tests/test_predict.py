"""`deploykit predict` on the tiny-ci artifacts: TEXT arguments, .tsv/.csv/.jsonl/.txt/stdin, --json, atomic --out."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import deploykit.predict as predict_module
from deploykit.cli import app
from deploykit.predictor import ClassifierPredictor, load

TEXTS = ["a good film", "an awful , boring mess", "quite , really boring", "the acting was wonderful\tand lovely",
         "terrible plot", "a fine story"]


def invoke(*args, input=None):
    return CliRunner().invoke(app, ["predict", *map(str, args)], input=input)


def records(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def final(tiny_chain):
    return tiny_chain["quantize"]


@pytest.fixture(scope="module")
def expected(final) -> list[dict]:
    got = load(final)(TEXTS)
    assert len({r["label"] for r in got}) == 2  # the texts get both labels: a test comparing labels can fail
    return got


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_text_arguments_give_one_human_line_per_row(final, expected):
    result = invoke(final, *TEXTS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(TEXTS)
    for line, want, text in zip(lines, expected, TEXTS):
        label, score, shown = line.split(None, 2)
        assert (label, float(score)) == (want["label"], round(want["score"], 4))
        assert shown == " ".join(text.split())  # a tab inside a text does not break the line's columns


def test_json_is_one_object_per_row_in_order(final, expected):
    got = records(invoke(final, *TEXTS, "--json"))
    assert [r["text"] for r in got] == TEXTS
    assert [(r["label"], r["score"]) for r in got] == [(w["label"], w["score"]) for w in expected]
    assert all(set(r) == {"text", "label", "score"} for r in got)


def test_top_k_lists_every_label_best_first(final):
    got = records(invoke(final, *TEXTS[:2], "--json", "--top-k", "2"))
    for r in got:
        assert [d["score"] for d in r["top_k"]] == sorted((d["score"] for d in r["top_k"]), reverse=True)
        assert {d["label"] for d in r["top_k"]} == {"negative", "positive"}
        assert (r["label"], r["score"]) == (r["top_k"][0]["label"], r["top_k"][0]["score"])
    human = invoke(final, TEXTS[0], "--top-k", "2").stdout.split()
    assert human[0] == got[0]["label"] and human[2] == got[0]["top_k"][1]["label"]


def write(path, rows: list[dict], bom: bool = False):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",",
                                **({"quoting": csv.QUOTE_NONE, "escapechar": None} if path.suffix == ".tsv" else {}))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix, bom", [(".tsv", True), (".csv", False), (".jsonl", False)])
def test_files_are_read_like_training_data(final, tmp_path, suffix, bom):
    texts = [t.replace("\t", " ") for t in TEXTS]
    if suffix != ".tsv":  # a quoted comma and a line break inside a text: one record each
        texts[1] = 'the movie, "sadly", was\nbad'
    path = write(tmp_path / f"rows{suffix}", [{"label": i % 2, "sentence": t} for i, t in enumerate(texts)], bom)
    got = records(invoke(final, "--file", path, "--json"))
    assert [r["text"] for r in got] == texts
    assert [r["label"] for r in got] == [r["label"] for r in load(final)(texts)]


def test_text_pairs_from_a_file(tiny_chain, tmp_path):
    model = trained_as(tiny_chain["finetune"], tmp_path / "nli", text_column="premise", text_pair_column="hypothesis")
    pairs = [("the plot was good", "the acting was awful"), ("boring", "really a lovely film")]
    path = write(tmp_path / "pairs.csv", [{"premise": a, "hypothesis": b} for a, b in pairs])
    got = records(invoke(model, "--file", path, "--text-column", "premise", "--text-pair-column", "hypothesis",
                         "--json"))
    want = load(model)(pairs)
    assert [(r["text"], r["text_pair"], r["label"]) for r in got] == [(a, b, w["label"]) for (a, b), w in
                                                                      zip(pairs, want)]
    assert [r["score"] for r in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    # a model of single texts would score each pair as one input it never saw: refused, as the server does
    one_line_error(invoke(tiny_chain["finetune"], "--file", path, "--text-column", "premise", "--text-pair-column",
                          "hypothesis"), "was trained on single texts (its recipe's data.text_pair_column is null)")


def test_stdin_and_txt_hold_one_text_per_line(final, expected, tmp_path):
    result = invoke(final, "--file", "-", "--json", input="\n".join(TEXTS) + "\n\n")
    got = records(result)
    assert [(r["text"], r["label"]) for r in got] == [(t, w["label"]) for t, w in zip(TEXTS, expected)]
    assert f"stdin: 1 blank line skipped; {len(TEXTS)} texts, one row each" in " ".join(result.stderr.split())
    txt = tmp_path / "reviews.txt"
    txt.write_text("\r\n".join(TEXTS), encoding="utf-8")
    plain = invoke(final, "--file", txt, "--json")
    assert records(plain) == got and "blank" not in plain.stderr  # a last line without "\n" is no blank line
    txt.write_text(f"\n{TEXTS[0]}\n \n\n{TEXTS[1]}\n", encoding="utf-8")
    spaced = invoke(final, "--file", txt, "--json")
    assert [r["text"] for r in records(spaced)] == TEXTS[:2] and "3 blank lines skipped; 2 texts" in " ".join(spaced.stderr.split())


def test_out_is_written_whole_and_replaces_an_earlier_file(final, expected, tmp_path):
    out = tmp_path / "preds" / "p.jsonl"
    result = invoke(final, *TEXTS, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["text"], r["label"]) for r in got] == [(t, w["label"]) for t, w in zip(TEXTS, expected)]
    assert invoke(final, TEXTS[0], "--out", out).exit_code == 0
    assert len(out.read_text().splitlines()) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.jsonl"]  # no temporary file left


def test_a_failure_midway_leaves_out_as_it_was(final, tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    earlier = '{"text": "earlier", "label": "1", "score": 0.9}\n'  # an earlier run's predictions
    out.write_text(earlier)
    monkeypatch.setattr(predict_module, "CHUNK", 2)
    real, calls = ClassifierPredictor.__call__, []

    def fails_on_the_third_chunk(self, inputs, **kwargs):
        calls.append(len(inputs))
        if len(calls) == 3:
            raise RuntimeError("the model broke")
        return real(self, inputs, **kwargs)

    monkeypatch.setattr(ClassifierPredictor, "__call__", fails_on_the_third_chunk)
    result = invoke(final, *TEXTS, "--out", out)
    assert result.exit_code == 1 and "the model broke" in result.stderr
    assert calls == [2, 2, 2]  # two chunks were written to the temporary file before the failure
    assert out.read_text() == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


def test_out_that_is_not_a_file_is_refused_before_loading(final, tmp_path):
    folder = tmp_path / "results"
    (folder / "keep.txt").parent.mkdir()
    (folder / "keep.txt").write_text("mine")
    one_line_error(invoke(final, "a film", "--out", folder), "is a folder; give a file path")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(invoke(final, "a film", "--out", blocker / "p.jsonl"), "is a file, so nothing can be written")
    rows = write(tmp_path / "rows.tsv", [{"sentence": "a film"}])
    one_line_error(invoke(final, "--file", rows, "--out", rows), "is the input file")
    assert rows.read_text() == "sentence\na film\n"


def test_out_never_replaces_a_users_file_or_a_models_own(final, tiny_chain, tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    one_line_error(invoke(final, "a film", "--out", mine), "exists and does not hold deploykit predictions")
    assert mine.read_text() == "my notes\n"
    # a user's rows in a shape close to ours (tests/test_predictions_file.py has the rest): kept
    rows = '{"text": "Apple is in Cupertino", "entities": [[0, 5, "ORG"]]}\n'
    mine.write_text(rows)
    one_line_error(invoke(final, "a film", "--out", mine), "exists and does not hold deploykit predictions")
    assert mine.read_text() == rows
    ours = tmp_path / "ours.jsonl"  # an earlier run's own predictions are replaced
    ours.write_text('{"text": "a", "label": "pos", "score": 0.9}\n')
    assert invoke(final, "a film", "--out", ours).exit_code == 0 and '"a film"' in ours.read_text()
    onnx = Path(final) / "model.onnx"
    before = onnx.read_bytes()
    one_line_error(invoke(final, "a film", "--out", onnx), f"is inside the deploykit quantize folder {Path(final).resolve()}")
    one_line_error(invoke(final, "a film", "--out", Path(final) / "preds.jsonl"), "is inside the deploykit")
    assert onnx.read_bytes() == before and not (Path(final) / "preds.jsonl").exists()
    empty = tmp_path / "empty.jsonl"
    empty.touch()  # nothing to lose: written
    assert invoke(final, "a film", "--out", empty).exit_code == 0 and empty.read_text().startswith('{"text"')


def test_bad_input_is_one_line_exit_2(final, tiny_chain, tiny_llama, tmp_path):
    one_line_error(invoke(final), "no texts")
    one_line_error(invoke(final, "a film", "--file", "-"), "not both")
    one_line_error(invoke(tmp_path / "missing", "a film"), "artifact not found")
    one_line_error(invoke(final, "a film", "--runtime", "tvm"), "unknown runtime 'tvm'")
    one_line_error(invoke(tiny_llama, "a film"), "is a causal LM; add --generate")
    one_line_error(invoke(final, "a film", "--generate"), "--generate needs a causal LM")
    one_line_error(invoke(final, "a film", "--max-new-tokens", "5"), "--max-new-tokens applies to --generate")
    rows = write(tmp_path / "rows.tsv", [{"sentence": "a film", "label": "1"}])
    one_line_error(invoke(final, "--file", rows, "--text-column", "review"), "no column 'review' (columns: sentence, label)")
    q = write(tmp_path / "q.tsv", [{"question": "why", "other": "so"}])  # the flag is the fault, not a column
    one_line_error(invoke(tiny_llama, "--file", q, "--generate", "--text-pair-column", "other"),
                   "--generate answers single texts; drop --text-pair-column")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nfine,1\na, film, with commas,0\n")
    one_line_error(invoke(final, "--file", bad), "line 3 has 4 fields")
    one_line_error(invoke(final, "--file", tmp_path / "none.tsv"), "data file not found")
    blank = write(tmp_path / "blank.jsonl", [{"sentence": "a film"}, {"sentence": ""}])
    one_line_error(invoke(final, "--file", blank), "line 2: column 'sentence' is empty")
    # named by its place among all texts ("item 1"), not by the file's line
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"sentence": "a film"}\n{"sentence": "bad \\ud800"}\n')
    one_line_error(invoke(final, "--file", surrogate), "surrogate.jsonl: line 2: column 'sentence' is not valid Unicode")
    # a .txt line of invisible characters is a blank line: skipped and counted, not answered
    invisible = tmp_path / "invisible.txt"
    invisible.write_text("a film\n\u200b\n")
    assert len(records(invoke(final, "--file", invisible, "--json"))) == 1
    one_line_error(invoke(final, "--file", "-", input="\n\n"), "stdin: no texts")
    # a column named for input without columns was ignored: each line was classified whatever the flag said
    lines = tmp_path / "reviews.txt"
    lines.write_text("a film\n")
    one_line_error(invoke(final, "--file", lines, "--text-column", "review"), "one text per line has no columns; drop "
                   "--text-column")
    one_line_error(invoke(final, "a film", "--text-column", "review"), "--text-column reads a column of --file")


def test_out_dash_is_stdout_and_a_device_is_written_through(final):
    got = records(invoke(final, *TEXTS[:2], "--out", "-"))
    assert [(r["text"], r["label"]) for r in got] == [(t, w["label"]) for t, w in zip(TEXTS, load(final)(TEXTS[:2]))]
    assert not Path("-").exists()
    result = invoke(final, TEXTS[0], "--out", "/dev/null")
    assert result.exit_code == 0 and result.stdout.strip() == "/dev/null", result.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_out_where_no_file_can_be_made_is_one_line_before_loading(final):
    # as root os.access says /proc is writable; only creating the file tells
    result = invoke(final, TEXTS[0], "--out", "/proc/p.jsonl")
    one_line_error(result, "--out /proc/p.jsonl")


def test_a_file_run_leaves_stderr_empty(final, tmp_path):
    txt = tmp_path / "reviews.txt"
    txt.write_text("\n".join(TEXTS), encoding="utf-8")
    result = invoke(final, "--file", txt)
    assert result.exit_code == 0 and result.stderr == "", repr(result.stderr)


def test_text_that_is_not_utf8_or_not_a_string_is_one_line_exit_2(final, tmp_path):
    one_line_error(invoke(final, "--file", "-", input=b"a fine film\ncaf\xe9\n"), "stdin: line 2 is not UTF-8")
    rows = tmp_path / "x.jsonl"
    for value, kind in ((["a", "b"], "a list"), (True, "a boolean"), ({"a": 1}, "an object")):
        rows.write_text(json.dumps({"sentence": "fine"}) + "\n" + json.dumps({"sentence": value}) + "\n")
        one_line_error(invoke(final, "--file", rows), f"x.jsonl: line 2: column 'sentence' is {kind}, not text")
    rows.write_text(json.dumps({"sentence": 5}) + "\n")  # a number is its digits, as training reads it
    assert [r["text"] for r in records(invoke(final, "--file", rows, "--json"))] == ["5"]


def test_unsupported_files_name_every_kind_predict_reads(final, tmp_path):
    one_line_error(invoke(final, "--file", tmp_path / "rows.xlsx"), "use .tsv, .csv, .jsonl, .txt, or - for stdin")
    one_line_error(invoke(final, "--file", tmp_path), "is a folder; give a file")


def test_generate_answers_each_text_with_a_causal_lm(tiny_llama):
    got = records(invoke(tiny_llama, "a good film", "a bad film", "--generate", "--max-new-tokens", "3", "--json"))
    assert [r["text"] for r in got] == ["a good film", "a bad film"]
    assert all(isinstance(r["answer"], str) and 1 <= r["new_tokens"] <= 3 for r in got)
    # without --json: one line per text, the text then its answer (the bare answers ran together, line breaks and all)
    plain = invoke(tiny_llama, "a good film", "a bad film", "--generate", "--max-new-tokens", "3").stdout.splitlines()
    assert plain == [f"{r['text']}  ->  {' '.join(r['answer'].split()) or '(no answer)'}" for r in got]


def test_generate_fills_the_models_prompt_template_as_training_did(tmp_path):
    # a file was read by a `sentence` column and sent as written: a model trained on "...Review: {sentence}" (or on
    # dolly's "{instruction}\n\n{input}") was asked something it never saw, and dolly's own file was refused
    from deploykit.errors import UserError

    dolly = tmp_path / "dev.jsonl"
    dolly.write_text('{"instruction": "Name a colour.", "input": "", "output": "red"}\n'
                     '{"instruction": "Sum it.", "input": "1 2", "output": "3"}\n')
    two = "{instruction}\n\n{input}"
    assert predict_module.read_prompts([], dolly, None, two) == (["Name a colour.", "Sum it.\n\n1 2"],) * 2
    reviews = write(tmp_path / "r.tsv", [{"sentence": "a fine film", "label": "1"}])
    one = "Answer with one word.\n\nReview: {sentence}"
    assert predict_module.read_prompts([], reviews, None, one) == (["Answer with one word.\n\nReview: a fine film"],
                                                                   ["a fine film"])
    # TEXT arguments fill a template of one field; of several, each is the prompt as written
    assert predict_module.read_prompts(["a dull one"], None, None, one) == (
        ["Answer with one word.\n\nReview: a dull one"], ["a dull one"])
    assert predict_module.read_prompts(["Sum 1 2."], None, None, two) == (["Sum 1 2."], ["Sum 1 2."])
    # --text-column, or a model without a template: the column's text as written
    assert predict_module.read_prompts([], dolly, "instruction", two) == (["Name a colour.", "Sum it."],) * 2
    assert predict_module.read_prompts([], reviews, None, None) == (["a fine film"],) * 2
    with pytest.raises(UserError, match="names column 'sentence', which line 1 does not have"):
        predict_module.read_prompts([], dolly, None, one)
    dolly.write_text('{"instruction": null, "input": ""}\n')
    with pytest.raises(UserError, match="line 1 has no value for column 'instruction'"):
        predict_module.read_prompts([], dolly, None, two)


def test_generate_with_a_template_answers_the_rows_and_shows_their_own_text(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr("deploykit.lineage.trained_template", lambda artifact: "Review: {sentence}")
    asked = []
    real = predict_module.answer

    def spy(gen, texts, *args, **kwargs):
        asked.extend(texts)
        return real(gen, texts, *args, **kwargs)

    monkeypatch.setattr(predict_module, "answer", spy)
    rows = write(tmp_path / "r.tsv", [{"sentence": "a fine film"}, {"sentence": "a dull one"}])
    got = records(invoke(tiny_llama, "--file", rows, "--generate", "--max-new-tokens", "2", "--json"))
    assert asked == ["Review: a fine film", "Review: a dull one"]
    assert [r["text"] for r in got] == ["a fine film", "a dull one"]


def test_a_text_past_the_positions_is_named_by_its_place_among_all_texts(tiny_llama, tmp_path):
    # texts are answered 8 at a time; the 11th (index 10) is too long: it was named "prompt 2" of its batch of 8
    from transformers import AutoConfig

    limit = AutoConfig.from_pretrained(tiny_llama).max_position_embeddings
    rows = tmp_path / "rows.txt"
    rows.write_text("\n".join(["a film"] * 10 + ["good " * limit]), encoding="utf-8")
    one_line_error(invoke(tiny_llama, "--file", rows, "--generate", "--max-new-tokens", "3"), "prompt 10 is ")
    # so is one that is not valid Unicode (undecodable bytes of an argument)
    one_line_error(invoke(tiny_llama, *["a film"] * 10, "bad \udcff byte", "--generate"), "generate: prompt 10 'bad ")


def test_a_reader_that_goes_away_stops_predict_quietly(final, tmp_path):
    import subprocess
    import sys

    txt = tmp_path / "many.txt"
    txt.write_text("\n".join(TEXTS * 800), encoding="utf-8")  # more than a pipe holds
    cli = "import sys; from deploykit.cli import main; sys.argv[0] = 'deploykit'; main()"
    proc = subprocess.Popen([sys.executable, "-c", cli, "predict", str(final), "--file", str(txt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "error" not in err and "Traceback" not in err, err


def trained_as(folder: Path, dest: Path, **data) -> Path:
    """A copy of `folder` whose manifest says its recipe read `data` (columns) instead."""
    import shutil

    shutil.copytree(folder, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["config"]["data"].update(data)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_a_file_is_read_by_the_columns_the_model_was_trained_on(tiny_chain, tmp_path):
    model = trained_as(tiny_chain["finetune"], tmp_path / "reviews", text_column="review")
    path = write(tmp_path / "rows.jsonl", [{"id": i, "review": t} for i, t in enumerate(TEXTS)])
    got = records(invoke(model, "--file", path, "--json"))
    assert [r["text"] for r in got] == TEXTS
    # the flag still wins, and a column the file lacks is named with where the name came from
    one_line_error(invoke(model, "--file", path, "--text-column", "sentence"), "no column 'sentence' (columns: id, review)")
    other = write(tmp_path / "other.jsonl", [{"sentence": "a film"}])
    one_line_error(invoke(model, "--file", other), "no column 'review', the model's text column (columns: sentence)")


def test_a_model_trained_on_pairs_reads_pairs_or_says_what_is_missing(tiny_chain, tmp_path):
    model = trained_as(tiny_chain["finetune"], tmp_path / "nli", text_column="premise", text_pair_column="hypothesis")
    pairs = [("the plot was good", "the acting was awful"), ("boring", "really a lovely film")]
    path = write(tmp_path / "pairs.jsonl", [{"premise": a, "hypothesis": b} for a, b in pairs])
    got = records(invoke(model, "--file", path, "--json"))
    assert [(r["text"], r["text_pair"]) for r in got] == pairs
    assert [r["label"] for r in got] == [w["label"] for w in load(model)(pairs)]
    # half of each input, scored alone, would be a silent wrong answer: refused with the fix
    for args, where in (([model, "the plot was good"], "TEXT arguments"), ([model, "--file", "-"], "stdin")):
        one_line_error(invoke(*args, input="boring\n"), f"{where}: the model was trained on sentence pairs "
                                                          "(columns premise, hypothesis)")
    single = write(tmp_path / "single.csv", [{"premise": "the plot was good"}])
    one_line_error(invoke(model, "--file", single), "no column 'hypothesis', the model's second text column")


def test_a_pytorch_folder_loads_without_a_progress_bar(tiny_chain):
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()  # an earlier test's --quiet turns the bars off for the process
    hf_logging.enable_progress_bar()
    try:
        result = invoke(tiny_chain["finetune"], "a fine film")
        assert result.exit_code == 0 and result.stderr == "", result.stderr  # "Loading weights: 100%|..." before
        assert hf_logging.is_progress_bar_enabled()  # put back for whatever the process does next
    finally:
        if not was:
            hf_logging.disable_progress_bar()


def test_an_export_of_a_pair_model_still_refuses_single_texts_wherever_it_goes(tiny_chain, tmp_path, monkeypatch):
    # the export's own recipe has no data section: what the model reads travels in its manifest, and the parent is
    # recorded by its absolute path even when --from was relative
    import shutil

    trained_as(tiny_chain["finetune"], tmp_path / "nli", text_column="premise", text_pair_column="hypothesis")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["export", "--from", "nli", "--out", "onnx", "-q"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["parent"]["path"] == str((tmp_path / "nli").resolve())
    assert manifest["columns"] == {"text_column": "premise", "text_pair_column": "hypothesis"}
    moved = shutil.move(tmp_path / "onnx", tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "nli")  # the parent is gone too: the export alone says what it reads
    one_line_error(invoke(moved, "a fine film"), "the model was trained on sentence pairs (columns premise, hypothesis)")
    path = write(tmp_path / "pairs.jsonl", [{"premise": "a fine film", "hypothesis": "a dull one"}])
    assert [r["text_pair"] for r in records(invoke(moved, "--file", path, "--json"))] == ["a dull one"]


def test_quiet_keeps_the_warning_of_a_folder_without_its_manifest(tiny_chain):
    result = invoke(tiny_chain["raw"], "a good film", "--json", "-q")
    assert len(records(result)) == 1
    # the answer for long texts depends on it, so --quiet (no progress, no status) still says it
    assert "does not record the length its model was trained with" in " ".join(result.stderr.split())
