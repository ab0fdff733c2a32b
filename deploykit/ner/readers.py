"""Tagged sentences from one file, read as written: JSONL (a tokens column and a tags column) or CoNLL columns.

    s = read_jsonl(Path("conll2003/dev.jsonl"), "tokens", "ner_tags")    # s.tokens[0] == ["CRICKET", "-", ...]
    s = read_conll(Path("eng.testa"))                                     # `token ... tag` lines
    s.where(0, 3)                                                         # "line 4": where a word was written

Tags come back as the strings written (integer ids are turned into `label_names`); whether they follow the
IOB2 scheme is checked by deploykit/ner/data.py. Every fault is a one-line UserError naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UserError
from deploykit.records import decode, is_blank, read_rows, where

DOCSTART = "-DOCSTART-"


@dataclass
class Sentences:
    """The sentences of one file.

    Attributes:
        tokens: [sentences][words] the words.
        tags: [sentences][words] each word's tag as a string ("B-PER", "O").
        lines: [sentences] the line each sentence starts on (1-based), or None for rows without lines (the hub).
        per_word_lines: True for CoNLL, where word j of a sentence is on line `lines[i] + j`.
        origin: the file, for messages.
    """

    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[int] | None
    per_word_lines: bool
    origin: str

    def __post_init__(self) -> None:
        # such a word has no word piece, so no position carries its tag: an entity there could never be learned
        for i, (words, tags) in enumerate(zip(self.tokens, self.tags)):
            if (j := next((j for j, (w, t) in enumerate(zip(words, tags)) if t != "O" and is_blank(w)), None)) is not None:
                raise UserError(f"{self.origin}: {self.where(i, j)}: word {j + 1} ({words[j]!r}) is tagged {tags[j]} "
                                "but has no visible character; fix the word or tag it O")

    def where(self, i: int, j: int = 0) -> str:
        """'line 12' (the line word j of sentence i was written on), or 'row 3' for rows without lines."""
        if self.lines is None:
            return f"row {i + 1}"
        return f"line {self.lines[i] + (j if self.per_word_lines else 0)}"


def _tag_names(tags: list, names: list[str] | None, origin: str, at: str, column: str) -> list[str]:
    """A record's tags as strings; integer ids (JSON numbers, or hub ClassLabel ids) become `names[id]`."""
    out = []
    for tag in tags:
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise UserError(f"{origin}: {at}: column '{column}' holds {tag!r}; tags are strings (B-PER) or ids")
        if isinstance(tag, int):
            if names is None:
                raise UserError(f"{origin}: {at}: tag ids ({tag}) need their names: set data.label_names "
                                "(e.g. [O, B-PER, I-PER, ...] in id order)")
            if not 0 <= tag < len(names):
                raise UserError(f"{origin}: {at}: tag id {tag} is outside data.label_names (0..{len(names) - 1})")
            tag = names[tag]
        out.append(tag)
    return out


def from_records(rows: list[dict], tokens_column: str, tags_column: str, label_names: list[str] | None,
                 origin: str) -> Sentences:
    """Sentences from records holding a list of words and a list of tags (JSONL lines, or hub rows).

    Raises:
        UserError: a missing column, a column that is not a list, words and tags of different lengths, no words, or
            an entity tag on a word without a visible character.
    """
    tokens, tags, lines = [], [], []
    for n, row in enumerate(rows, 1):
        at = where(row, n)
        for column in (tokens_column, tags_column):
            if column not in row:
                raise UserError(f"{origin}: {at} has no column '{column}' (columns: {', '.join(map(str, row))}); "
                                "set data.tokens_column / data.tags_column")
            if not isinstance(row[column], list):
                raise UserError(f"{origin}: {at}: column '{column}' is not a list (one entry per word)")
        words, row_tags = row[tokens_column], row[tags_column]
        if len(words) != len(row_tags):
            raise UserError(f"{origin}: {at} has {len(words)} tokens but {len(row_tags)} tags; "
                            "give every word exactly one tag")
        if not all(isinstance(w, str) for w in words):
            raise UserError(f"{origin}: {at}: column '{tokens_column}' must hold strings (the words)")
        if not words:
            raise UserError(f"{origin}: {at}: column '{tokens_column}' is an empty list; give the sentence's words, "
                            "or remove the row")
        tokens.append(list(words))
        tags.append(_tag_names(row_tags, label_names, origin, at, tags_column))
        lines.append(getattr(row, "line", n))
    has_lines = bool(rows) and hasattr(rows[0], "line")
    return Sentences(tokens, tags, lines if has_lines else None, False, origin)


def read_jsonl(path: Path, tokens_column: str = "tokens", tags_column: str = "ner_tags",
               label_names: list[str] | None = None) -> Sentences:
    """One sentence per JSON line, e.g. {"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]}.

    Raises:
        UserError: a missing or empty file, a line that is not JSON (deploykit/records.py), or `from_records`'s.
    """
    return from_records(read_rows(path, None), tokens_column, tags_column, label_names, str(path))


def read_conll(path: Path, label_names: list[str] | None = None) -> Sentences:
    """CoNLL columns: one `token ... tag` line per word (the tag is the last column, spaces or tabs between
    columns), a blank line between sentences, `-DOCSTART-` lines skipped (they separate documents).

    Raises:
        UserError: a missing file, text that is not UTF-8, a line with one column, or a file with no words.
    """
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    text = decode(path.read_bytes(), str(path))
    tokens: list[list[str]] = []
    tags: list[list] = []
    lines: list[int] = []
    words: list[str] = []
    word_tags: list = []

    def end_sentence() -> None:
        if words:
            tokens.append(words.copy())
            tags.append(_tag_names(word_tags, label_names, str(path), f"line {lines[-1]}", "tag"))
            words.clear()
            word_tags.clear()

    # lines end at "\n" only, as in records.py: str.splitlines() would also cut at U+2028 inside a token
    for n, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            end_sentence()
            continue
        if len(fields) < 2:
            raise UserError(f"{path}: line {n} has one column ({fields[0]!r}); CoNLL lines are 'token ... tag' "
                            "with the tag last")
        if not words:
            lines.append(n)
        words.append(fields[0])
        # ids in CoNLL are digits: read them as ids only when names are given to turn them into tags
        tag = fields[-1]
        word_tags.append(int(tag) if label_names is not None and tag.isdigit() else tag)
    end_sentence()
    if not tokens:
        raise UserError(f"{path}: file holds no tagged words (expected 'token ... tag' lines)")
    return Sentences(tokens, tags, lines, True, str(path))
