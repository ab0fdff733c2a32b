"""`deploykit predict`: texts from the command line, a file or stdin through `deploykit.load`, one line per row.

    deploykit predict runs/sst2-minilm/quantize "a fine film" "a dull one"
    deploykit predict runs/sst2-minilm/quantize --file ../shared/data/sst2/test.tsv --out preds.jsonl
    cat reviews.txt | deploykit predict runs/sst2-minilm/quantize --file - --json --top-k 2

Files are read like training data (deploykit/records.py: .tsv/.csv/.jsonl with a header row, quoting,
BOM, faults named by line); `.txt` and `-` (stdin) hold one text per line (blank lines are skipped, and
counted on stderr). Without `--json` each row is
one human line (`label  score  text`); with `--json` or `--out`, one JSON object per row
(`{"text", "label", "score"}`, plus `"top_k"` for `--top-k` > 1). `--out` is written to a temporary file
beside it and renamed at the end, so it is never half-written; `--out -` is stdout, and a device or pipe
(`/dev/null`, a FIFO) is written straight through.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from deploykit.errors import PromptTooLong, UserError
from deploykit.predictions_file import is_predictions

CHUNK = 256  # rows per predictor call: the progress bar moves per chunk, rows are length-sorted within one
LINES = (".txt",)  # besides stdin: one text per line, no header
SHOWN = 60  # characters of a text on a human line


def read_texts(texts: list[str], file: Path | None, text_column: str | None = None,
               text_pair_column: str | None = None,
               trained: tuple[str | None, str | None] = (None, None)) -> tuple[list[str], list[str] | None]:
    """(texts, pairs or None) from the command line's TEXT arguments or from `file` ("-" is stdin).

    `trained`: the model's own (text column, text pair column) from its recipe (lineage.trained_columns), read
    where the flags name none; `sentence` when neither says. A model trained on pairs gets pairs or an error.

    Raises:
        UserError: both or neither given, a missing column, single texts for a model trained on pairs, an empty
            file, any fault records.py finds.
    """
    trained_text, trained_pair = trained
    if texts and file is not None:
        raise UserError("predict: give TEXT arguments or --file, not both")
    if file is None or str(file) == "-" or file.suffix in LINES:
        where = "TEXT arguments" if file is None else "stdin" if str(file) == "-" else str(file)
        if trained_pair and not text_pair_column:  # scored alone, each text would be half of what the model reads
            raise UserError(f"{where}: the model was trained on sentence pairs (columns {trained_text}, "
                            f"{trained_pair}); give them as two columns of a .tsv/.csv/.jsonl --file")
    if file is None:
        if not texts:
            raise UserError("predict: no texts; give TEXT arguments or --file rows.tsv|.csv|.jsonl|.txt|-")
        if text_pair_column or text_column:
            flag = "--text-pair-column" if text_pair_column else "--text-column"
            raise UserError(f"predict: {flag} reads a column of --file; TEXT arguments are single texts")
        return list(texts), None
    from deploykit.records import SUFFIXES, read_rows
    from deploykit.records import texts as column_texts

    if str(file) != "-" and file.is_dir():
        raise UserError(f"{file}: is a folder; give a file ({', '.join(SUFFIXES + LINES)}) or - for stdin")
    if str(file) != "-" and file.suffix not in SUFFIXES + LINES:
        raise UserError(f"{file}: unsupported file type (use {', '.join(SUFFIXES + LINES)}, or - for stdin)")
    if str(file) == "-" or file.suffix in LINES:
        if text_pair_column or text_column:  # a column named for a file without columns: read as lines it was not
            raise UserError(f"{'stdin' if str(file) == '-' else file}: one text per line has no columns; drop "
                            f"{'--text-pair-column (give pairs in' if text_pair_column else '--text-column (or give'}"
                            " a .tsv/.csv/.jsonl file)")
        return _lines(file), None
    rows = read_rows(file, None)
    for flag, given, own in (("--text-column", text_column, trained_text or "sentence"),
                             ("--text-pair-column", text_pair_column, trained_pair)):
        name = given or own
        if name is not None and name not in rows[0]:
            why = "" if given else f", the model's {'text' if flag == '--text-column' else 'second text'} column"
            raise UserError(f"{file}: no column '{name}'{why} (columns: {', '.join(map(str, rows[0]))}); "
                            f"name the right one with {flag}")
    text_column, text_pair_column = text_column or trained_text or "sentence", text_pair_column or trained_pair
    texts = column_texts(rows, text_column, str(file))
    pairs = column_texts(rows, text_pair_column, str(file), empty_ok=True) if text_pair_column else None
    return texts, pairs


def read_prompts(texts: list[str], file: Path | None, text_column: str | None,
                 template: str | None) -> tuple[list[str], list[str]]:
    """(prompts, shown texts) for `--generate`, by the model's `data.prompt_template` where it has one: a file's rows
    fill its {column} fields as training did; a TEXT argument or a line fills a template of one field (SST-2's
    "...Review: {sentence}"), and is the prompt as written for a template of several. `--text-column`, or no
    template: each text is the prompt as written."""
    from deploykit.llm.data import fill_prompts, template_fields
    from deploykit.records import SUFFIXES, read_rows

    if template is None or text_column is not None:
        prompts, _ = read_texts(texts, file, text_column)
        return prompts, prompts
    fields = template_fields(template)
    if file is not None and str(file) != "-" and file.suffix in SUFFIXES and not file.is_dir():
        rows = read_rows(file, None)
        prompts = fill_prompts(rows, template, str(file))
        return prompts, [str(row[fields[0]]).strip() for row in rows] if len(fields) == 1 else prompts
    given, _ = read_texts(texts, file)
    if len(fields) != 1:
        return given, given
    return [template.format_map({fields[0]: text}).strip() for text in given], given


def _lines(file: Path) -> list[str]:
    from deploykit.console import log
    from deploykit.records import decode, lines

    where = "stdin" if str(file) == "-" else str(file)
    if where == "stdin":
        # bytes, decoded as files are: sys.stdin's surrogateescape would pass undecodable bytes on as lone
        # surrogates, which the tokenizer refuses with a TypeError
        stdin = sys.stdin
        raw = decode(stdin.buffer.read(), where) if hasattr(stdin, "buffer") else stdin.read()
    else:
        if not file.is_file():
            raise UserError(f"{file}: file not found")
        raw = decode(file.read_bytes(), where)
    texts = lines(raw)
    if not texts:
        raise UserError(f"{where}: no texts (one text per line)")
    # a blank line has no text to score: its row is left out, and said, so that nobody counts on one row per line
    blank = len(raw.removesuffix("\n").split("\n")) - len(texts)
    if blank:
        log(f"predict: {where}: {blank} blank line{'s' if blank > 1 else ''} skipped; {len(texts)} texts, one row each")
    return texts


def check_out_file(out: Path, inputs: Path | None = None) -> Path:
    """Refuse an --out that is not a file path deploykit may replace, before any work starts.

    Accepted besides a file path: an existing device or pipe (/dev/null), written as it is.

    Raises:
        UserError: --out is a folder, the input file itself, inside a deploykit output (a model's own files, a
            run folder), an existing non-empty file that is not deploykit predictions (a user's file would be
            lost), under a file, or in a folder that cannot be written (tried with the temporary file:
            os.access says yes to root even in /proc).
    """
    from deploykit.artifact import output_kind

    if _stream(out):
        return out
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a file path, e.g. {out / 'preds.jsonl'}")
    if inputs is not None and str(inputs) != "-" and out.exists() and inputs.exists() and out.samefile(inputs):
        raise UserError(f"--out {out}: is the input file; give another path")
    # a file inside an artifact replaces or adds to what deploykit wrote there (model.onnx, a run's stages)
    owner = next(((p, kind) for p in out.expanduser().resolve().parents if (kind := output_kind(p))), None)
    if owner is not None:
        raise UserError(f"--out {out}: is inside the deploykit {owner[1]} folder {owner[0]}; give a path outside it")
    if out.is_file() and out.stat().st_size and not is_predictions(out):
        raise UserError(f"--out {out}: exists and does not hold deploykit predictions; give a new path "
                        "(or remove the file first if it may go)")
    existing = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path.cwd())
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable; give a path you can write to")
    if existing == out.parent:
        tmp = _tmp(out)
        try:
            tmp.open("w").close()
            tmp.unlink()
        except OSError as err:
            raise UserError(f"--out {out}: cannot write in {existing} ({err.strerror or err}); "
                            "give a path you can write to") from None
    return out


def _stream(out: Path) -> bool:
    """An existing path that is neither a file nor a folder (a device, a FIFO): written directly, not replaced."""
    return out.exists() and not out.is_file() and not out.is_dir()


def _tmp(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def write_atomic(out: Path, lines: Iterator[str]) -> int:
    """Write `lines` (each without its newline) to a temporary file beside `out`, then rename it into place.

    Returns:
        How many lines were written. On any exception (interrupts included) `out` is left as it was.
        A device or pipe is written straight through.
    """
    if _stream(out):
        n = 0
        with open(out, "w", encoding="utf-8") as f:
            for n, line in enumerate(lines, 1):
                f.write(line + "\n")
        return n
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(out)
    n = 0
    try:
        try:
            f = open(tmp, "w", encoding="utf-8")
        except OSError as err:
            raise UserError(f"--out {out}: cannot write there ({err.strerror or err}); "
                            "give a path you can write to") from None
        with f:
            for line in lines:
                f.write(line + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def classify(clf, texts: list[str], pairs: list[str] | None, top_k: int = 1, batch_size: int = 32,
             progress: bool = False) -> Iterator[dict]:
    """One JSON-ready record per row, in order: {"text", ["text_pair"], "label", "score", ["top_k"]}."""
    from deploykit.console import progress as bar

    starts = range(0, len(texts), CHUNK)
    for start in bar(starts, total=len(starts), description="predict") if progress else starts:
        part = texts[start:start + CHUNK]
        inputs = part if pairs is None else list(zip(part, pairs[start:start + CHUNK]))
        results = clf(inputs, batch_size=batch_size, top_k=top_k)
        for n, result in enumerate(results):
            ranked = result if isinstance(result, list) else [result]
            record = {"text": part[n]}
            if pairs is not None:
                record["text_pair"] = pairs[start + n]
            record.update(label=ranked[0]["label"], score=ranked[0]["score"])
            if top_k > 1:
                record["top_k"] = ranked
            yield record


def entities(tagger, texts: list[str], batch_size: int = 32, progress: bool = False) -> Iterator[dict]:
    """A token classifier's entity groups per text, as the pipeline's aggregation_strategy="simple" gives them:
    {"text", "entities": [{"entity_group", "score", "word", "start", "end"}, ...]} (offsets in characters)."""
    from deploykit.console import progress as bar

    starts = range(0, len(texts), CHUNK)
    for start in bar(starts, total=len(starts), description="predict") if progress else starts:
        part = texts[start:start + CHUNK]
        for text, groups in zip(part, tagger(part, batch_size=batch_size)):
            yield {"text": text, "entities": groups}


def answer(gen, texts: list[str], max_new_tokens: int, batch_size: int = 8, progress: bool = False,
           shown: list[str] | None = None) -> Iterator[dict]:
    """A causal LM's greedy answer per text (the chat template applied where the tokenizer has one); each record's
    "text" is `shown[i]` where given (the row's own text, not the prompt the model's template made of it)."""
    from deploykit.console import progress as bar
    from deploykit.llm.generate import chat_prompts

    from deploykit.llm.prompt_checks import check_texts

    check_texts(texts)  # here, not per batch: its line numbers the text among all of them
    chat = bool(getattr(gen.tokenizer, "chat_template", None))
    starts = range(0, len(texts), batch_size)
    for start in bar(starts, total=len(starts), description="generate") if progress else starts:
        part = texts[start:start + batch_size]
        try:
            out = gen.generate(chat_prompts(gen.tokenizer, part) if chat else part, max_new_tokens)
        except PromptTooLong as err:  # its index counts within this part: name the text among all of them
            raise err.shifted(start) from None
        for text, reply, n in zip(shown[start:start + batch_size] if shown else part, out.texts(gen.tokenizer),
                                  out.lengths):
            yield {"text": text, "answer": reply, "new_tokens": int(n)}


def human_line(record: dict, width: int) -> str:
    """`label  score  text[:60]`; with top_k, every label and score before the text; a token classifier's entity
    groups as `TYPE word score | ...` before the text; a causal LM's answer as `text[:60]  ->  answer`.

    Every row is one line: a text's or an answer's own line breaks and tabs become spaces (--json keeps them).
    """
    if "answer" in record:  # was the bare answer, line breaks and all: several prompts' answers ran together
        return f"{' '.join(record['text'].split())[:SHOWN]}  ->  {' '.join(record['answer'].split()) or '(no answer)'}"
    if "entities" in record:  # `TYPE word score` per group, then the text
        found = " | ".join(f"{g['entity_group']} {g['word']} {g['score']:.4f}" for g in record["entities"])
        return f"{found or '(no entities)'}  {' '.join(record['text'].split())[:SHOWN]}"
    shown = record["text"] if "text_pair" not in record else f"{record['text']} / {record['text_pair']}"
    shown = " ".join(shown.split())[:SHOWN]  # one line: a text's own line breaks and tabs become spaces
    ranked = record.get("top_k") or [record]
    scores = "  ".join(f"{r['label']:<{width}}  {r['score']:.4f}" for r in ranked)
    return f"{scores}  {shown}"


def predict_command(model: Path, texts: list[str], *, file: Path | None = None, text_column: str | None = None,
                    text_pair_column: str | None = None, top_k: int = 1, runtime: str = "auto",
                    threads: int | None = None, batch_size: int = 32, json_lines: bool = False,
                    out: Path | None = None, generate: bool = False, max_new_tokens: int | None = None,
                    show_progress: bool = True, echo: Callable[[str], None] = print) -> int:
    """What `deploykit predict` does: check, read, load, predict, print or write. Returns the rows done."""
    from deploykit import console
    from deploykit.artifact import load_artifact
    from deploykit.kinds import kind_of, task_of
    from deploykit.lineage import trained_columns, trained_on_pairs, trained_template
    from deploykit.predictor import is_causal_lm, load

    if out is not None and str(out) == "-":  # stdout, as for --file -
        out, json_lines = None, True
    if out is not None:
        check_out_file(out, file)
    artifact = load_artifact(model)
    shown = None
    if generate and text_pair_column is not None:  # before reading: the file's columns are not the fault
        raise UserError("predict: --generate answers single texts; drop --text-pair-column")
    if generate and is_causal_lm(artifact):  # prompts as the model was trained on
        (texts, shown), pairs = read_prompts(texts, file, text_column, trained_template(artifact)), None
    else:
        texts, pairs = read_texts(texts, file, text_column, text_pair_column, trained_columns(artifact))
    if pairs is not None and trained_on_pairs(artifact) is False:  # as `deploykit serve` answers 400
        raise UserError(f"{model}: was trained on single texts (its recipe's data.text_pair_column is null), so a "
                        "pair would be scored as one input it never saw; drop --text-pair-column")
    causal = is_causal_lm(artifact)  # before loading: a decoder's load takes seconds
    if causal and not generate:
        raise UserError(f"{model}: is a causal LM; add --generate to answer each text, or use `deploykit generate`")
    if generate and not causal:
        raise UserError(f"{model}: --generate needs a causal LM; this folder holds a classifier (drop --generate)")
    if max_new_tokens is not None and not generate:  # a length for answers that are not generated: a mistake
        raise UserError("predict: --max-new-tokens applies to --generate (a causal LM's answers); drop it")
    if generate and top_k != 1:
        raise UserError("predict: --top-k applies to classifiers, not to --generate")
    tagger = kind_of(task_of(artifact)).predictor is not None  # a token classifier: entity groups
    if tagger and top_k != 1:
        raise UserError(f"{model}: a token classifier gives entity groups, not ranked labels; drop --top-k")
    if tagger and pairs is not None:
        raise UserError(f"{model}: a token classifier tags single texts; drop --text-pair-column")
    predictor = load(model, runtime=runtime, threads=threads)
    if pairs is not None and (warning := predictor.pair_warning()):
        console.warn(f"predict: warning: {warning}")
    # a bar only on a terminal: rich's transient bar leaves an empty line in a redirected stderr
    progress = show_progress and file is not None and console.console.is_terminal
    if generate:
        records = answer(predictor, texts, max_new_tokens or 64, batch_size=min(batch_size, 8), progress=progress,
                         shown=shown)
        width = 0
    elif tagger:
        records, width = entities(predictor, texts, batch_size=batch_size, progress=progress), 0
    else:
        records = classify(predictor, texts, pairs, top_k=top_k, batch_size=batch_size, progress=progress)
        width = max(map(len, predictor.labels))
    if out is not None:
        n = write_atomic(out, (json.dumps(r, ensure_ascii=False) for r in records))
        echo(str(out))
        return n
    n = 0
    for n, record in enumerate(records, 1):
        echo(json.dumps(record, ensure_ascii=False) if json_lines else human_line(record, width))
    return n
