"""Records of a labelled data file (.tsv, .csv, .jsonl), read as written, every fault one line naming its line.

    rows = read_rows(Path("data/train.tsv"), column_names=None)   # [Row({"sentence": ..., "label": "1"}), ...]
    rows[0].line                                                  # 2: the physical line the record starts on
    label_keys(rows, "label", "data/train.tsv")                   # ["1", "0", ...]

Records end at "\n" / "\r\n" only: quoted CSV fields keep their line breaks and texts keep U+2028 / U+0085.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from pathlib import Path

from deploykit.errors import UserError

SUFFIXES = (".tsv", ".csv", ".jsonl")


class Row(dict):
    """One record, its fields by column name; `line` is the physical line (1-based) where it starts."""

    line: int


def where(row: dict, n: int) -> str:
    """'line 7' for a row read from a file, 'row 7' for one from the hub (no lines there)."""
    return f"line {row.line}" if isinstance(row, Row) else f"row {n}"


def _duplicate(names) -> str | None:
    """The first name that appears twice (a dict of the row would silently keep only the last one)."""
    seen: set[str] = set()
    return next((n for n in names if n in seen or seen.add(n)), None)


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    if (dup := _duplicate(k for k, _ in pairs)) is not None:
        raise ValueError(f"key '{dup}' appears twice in one object; rename one")
    return dict(pairs)


class NonFinite(float):
    """A JSON number Python reads as nan or inf (NaN, Infinity, -Infinity, 1e400), keeping what the file wrote: JSON
    (RFC 8259) has no such numbers, and str() of one made the text "nan" or "inf"."""

    written: str


def _non_finite(written: str) -> float:
    value = float(written)
    if math.isfinite(value):
        return value
    out = NonFinite(value)
    out.written = written if len(written) <= 20 else f"{written[:8]}...({len(written)} characters)"
    return out


def _json_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # past sys.get_int_max_str_digits() (4300): Python's message told the user to raise it
        raise ValueError(f"a number of {len(digits.lstrip('-'))} digits is too long to be read; "
                         "write it as a JSON string (\"...\")") from None


def _read_jsonl(path: Path, text: str) -> list[Row]:
    rows = []
    # records end at "\n" only: str.splitlines() would also cut at U+2028 / U+0085 inside a text
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_json_object, parse_int=_json_int,
                             parse_float=_non_finite, parse_constant=_non_finite)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
        except ValueError as err:
            raise UserError(f"{path}: line {n}: {err}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}: line {n} is not a JSON object (one {{\"column\": value, ...}} per line)")
        row = Row(obj)
        row.line = n
        rows.append(row)
    return rows


def _read_table(path: Path, text: str, column_names: list[str] | None) -> list[Row]:
    # Python's csv module, not pandas: every field stays the string written (pandas turns "NA" or "1.0" into
    # floats), newline="" keeps quoted line breaks, and QUOTE_NONE reads GLUE TSVs whose texts hold raw quotes
    tsv = path.suffix == ".tsv"
    # the csv module refuses a field over 131,072 characters (a long document is a valid text): no field can be
    # longer than the file, so that is the limit; an unclosed quote is named by the record it swallows below
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    # strict CSV: a quote never closed swallowed the rest of a one-column file into one text, and text after a closing
    # quote ('"a 12" record') lost its quotes, both without a word
    reader = csv.reader(io.StringIO(text, newline=""),
                        **({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {"strict": True}))
    header, rows, last = column_names, [], 0
    try:
        for fields in reader:
            start, last = last + 1, reader.line_num  # a quoted field may span lines: the record starts at `start`
            if not any(f.strip() for f in fields):
                continue  # blank line
            if header is None:
                header = fields
                if (dup := _duplicate(header)) is not None:
                    raise UserError(f"{path}: column '{dup}' appears twice in the header; rename one of the two")
                continue
            if len(fields) != len(header):
                hint = "a tab inside a text?" if tsv else "an unquoted comma inside a text? quote that field"
                if not tsv and reader.line_num - start >= 2 and any('"' in f or "\n" in f for f in fields):
                    hint = f"a quote opened on line {start} and never closed? the record runs to line {reader.line_num}"
                against = "data.column_names has" if column_names else "the header has"
                raise UserError(f"{path}: line {start} has {len(fields)} field{'s' * (len(fields) != 1)}, {against} "
                                f"{len(header)} ({hint}); fix that line or remove it")
            row = Row(zip(header, fields))
            row.line = start
            rows.append(row)
    except csv.Error as err:
        if "unexpected end of data" in str(err):
            why = f"a quote opened on line {last + 1} is never closed; close it, or double a quote inside a text (\"\")"
        elif "expected after" in str(err) and reader.line_num > last + 1:  # the quote closed lines later
            why = (f"a quote opened on line {last + 1} closes on line {reader.line_num} with text after it; close "
                   f"the quote on line {last + 1}, or double a quote inside a text (\"\")")
        elif "expected after" in str(err):
            why = ("a space or text follows a quoted field's closing quote; remove it, or quote the whole field and "
                   "double the quotes inside it")
        else:
            why = f"{err}; an unbalanced quote?"
        raise UserError(f"{path}: line {last + 1} cannot be read as {'TSV' if tsv else 'CSV'} ({why})") from None
    return rows


def decode(raw: bytes, origin: str) -> str:
    """UTF-8 text (a BOM dropped); bytes that are not UTF-8 are a UserError naming their line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(f"{origin}: line {line} is not UTF-8 text; re-encode it as UTF-8") from None


def lines(text: str) -> list[str]:
    """The non-blank lines of `text`, one text each; lines end at "\n" only, as records do: a text keeps its
    U+2028 (a "\r" before the "\n" is dropped)."""
    return [line.rstrip("\r") for line in text.split("\n") if not is_blank(line)]


def read_lines(path: Path) -> list[str]:
    """A .txt file's texts, one per non-blank line (UTF-8). Raises UserError: no file, not UTF-8."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return lines(decode(path.read_bytes(), str(path)))


def read_rows(path: Path, column_names: list[str] | None) -> list[Row]:
    """The records of a .tsv, .csv or .jsonl file; every fault is a one-line UserError naming the line."""
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")
    text = decode(path.read_bytes(), str(path))
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    if column_names and (dup := _duplicate(column_names)) is not None:
        raise UserError(f"data.column_names: '{dup}' appears twice; give every column its own name")
    rows = _read_jsonl(path, text) if path.suffix == ".jsonl" else _read_table(path, text, column_names)
    if not rows:
        raise UserError(f"{path}: file has a header but no rows")
    return rows


def check_column(rows: list[dict], col: str, path: str) -> None:
    if col not in rows[0]:
        raise UserError(f"{path}: no column '{col}' (columns: {', '.join(map(str, rows[0]))}); "
                        "set data.text_column / data.label_column, or data.column_names for headerless files")


def column(rows: list[dict], col: str, path: str) -> list:
    check_column(rows, col, path)
    out = [r.get(col) for r in rows]
    bad = next((n for n, v in enumerate(out) if v is None), None)
    if bad is not None:
        raise UserError(f"{path}: {where(rows[bad], bad + 1)} has no value for column '{col}'")
    return out


JSON_KINDS = {bool: "a boolean", list: "a list", dict: "an object"}  # JSON values that are neither text nor class


# characters no tokenizer reads as a word: white space, control and format characters (U+200B, U+00AD, U+FEFF) and
# combining marks with nothing to combine with; BERT's tokenizer drops every one of them
INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Me"})
# letters and symbols drawn as blank space: the Hangul fillers and the blank braille pattern (each read as [UNK])
FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """True for a text with no visible character ("", "  ", "\u200b", "\u00ad"): a classifier would answer it from
    its special tokens alone (SST-2's final: "positive 0.964")."""
    return all(c.isspace() or c in FILLERS or unicodedata.category(c) in INVISIBLE for c in text)


def unicode_fault(text: str) -> str | None:
    """Why `text` cannot be tokenized ("a lone surrogate at character 3"); None for valid Unicode.

    A lone surrogate ("\\ud800", what Python's surrogateescape makes of undecodable bytes) is a str the
    tokenizers library refuses with a TypeError.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"a lone surrogate at character {err.start}"
    return None


def not_finite(value: object, row: dict, n: int, col: str, path: str) -> None:
    """UserError for a NaN or infinite number cell (JSON NaN, Infinity, 1e400; a hub float nan), named by its line:
    str() of it is the text "nan" or "inf", a prompt, an answer or a class no one wrote."""
    if isinstance(value, float) and not math.isfinite(value):
        written = getattr(value, "written", str(value))
        raise UserError(f"{path}: {where(row, n)} has {written} for column '{col}', a number that is not finite; "
                        "write the text as a JSON string, or remove the row")


def texts(rows: list[dict], col: str, path: str, empty_ok: bool = False) -> list[str]:
    """The column's values as texts: a string as written, a number as its digits (str(5) == "5"); a JSON list,
    object or boolean is a one-line UserError naming the line, not its Python repr classified as text.

    An empty or whitespace-only value is one too unless `empty_ok` (a pair's second text, such as an instruction's
    empty input): a model would be trained on, or answer, the special tokens alone.
    """
    out = []
    for n, value in enumerate(column(rows, col, path), 1):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            kind = JSON_KINDS.get(type(value), type(value).__name__)
            raise UserError(f"{path}: {where(rows[n - 1], n)}: column '{col}' is {kind}, not text; "
                            "write the text as a JSON string")
        if isinstance(value, str) and (fault := unicode_fault(value)):  # a JSON "\ud800" escape
            raise UserError(f"{path}: {where(rows[n - 1], n)}: column '{col}' is not valid Unicode text ({fault}); "
                            "remove that character")
        not_finite(value, rows[n - 1], n, col, path)
        out.append(str(value))
    blank = [] if empty_ok else [n for n, text in enumerate(out) if is_blank(text)]
    if blank:
        more = f" ({len(blank)} rows are)" if len(blank) > 1 else ""
        raise UserError(f"{path}: {where(rows[blank[0]], blank[0] + 1)}: column '{col}' is empty or invisible "
                        f"characters only{more}; give each row its text, or remove the rows without one")
    return out


INTEGER = re.compile(r"[-+]?\d+")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def label_keys(rows: list[dict], column: str, origin: str) -> list[str]:
    """Each row's label as its class key: the text stripped, a number as its integer ("1.0" -> "1").

    A float that is integral is read as that integer: pandas writes an int column holding one missing value
    as "1.0", and JSON exporters write 1.0. A real fraction (0.5, 3.7) is a regression target, which a
    classifier cannot learn. Empty, missing and fractional labels are one-line UserErrors naming the line.
    """
    check_column(rows, column, origin)
    keys = []
    for n, row in enumerate(rows, 1):
        raw = row.get(column)
        if isinstance(raw, (bool, list, dict)):  # JSON true would otherwise become a class named "True"
            kind = JSON_KINDS[type(raw)]
            raise UserError(f"{origin}: {where(row, n)}: label column '{column}' is {kind} ({json.dumps(raw)[:40]}); "
                            "write the class id or name")
        not_finite(raw, row, n, column, origin)
        key = "" if raw is None else str(raw).strip()
        if not key:
            raise UserError(f"{origin}: {where(row, n)} has no label (column '{column}'); "
                            "fill it in or remove the row")
        if INTEGER.fullmatch(key):
            key = str(int(key))
        elif NUMBER.fullmatch(key):
            if not float(key).is_integer():
                raise UserError(f"{origin}: {where(row, n)} has label {key!r}, a fraction: a classification "
                                "task needs class ids or names (a regression target? not supported)")
            key = str(int(float(key)))
        keys.append(key)
    return keys
