"""Which files predict --out replaces: its own records only, keys, types and items (deploykit/predictions_file.py)."""

import pytest

from deploykit.predictions_file import is_predictions

OURS = ['{"text": "a", "label": "pos", "score": 0.9}\n\n{"text": "b", "label": "neg", "score": 1.0}\r\n',
        '{"text": "a", "text_pair": "b", "label": "pos", "score": 0.9, '
        '"top_k": [{"label": "pos", "score": 0.9}, {"label": "neg", "score": 0.1}]}\n',
        '{"text": "a", "entities": [{"entity_group": "PER", "score": 0.8, "word": "Ann", "start": 0, "end": 3}]}\n'
        '{"text": "b", "entities": []}\n',
        '{"text": "a", "answer": "b", "new_tokens": 2}\n']
# users' data that looked like ours at the top level and was replaced: spaCy-style entities, a rating as an int score,
# top_k of other items, a first line of ours over a user's rows
THEIRS = ['{"text": "Apple is in Cupertino", "entities": [[0, 5, "ORG"], [15, 24, "LOC"]]}\n',
          '{"text": "great movie", "label": "positive", "score": 5}\n',
          '{"text": "q", "label": "a", "score": 0.5, "top_k": ["any", "thing"]}\n',
          '{"text": "a", "entities": [{"entity_group": "PER", "score": 0.8, "word": "Ann", "start": 0}]}\n',
          '{"text": "my row", "label": 1}\n', '{"text": "a", "label": "pos", "score": 0.9, "id": 7}\n',
          '{"text": "a", "label": "pos", "score": 0.9}\n{"text": "mine"}\n', '{"text": "a", "label": "p", "score": true}\n',
          '[1, 2]\n', 'sentence\tlabel\n', '\n\n']


@pytest.mark.parametrize("rows", OURS)
def test_its_own_records_of_each_kind_are_predictions(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text(rows)
    assert is_predictions(path)


@pytest.mark.parametrize("rows", THEIRS)
def test_anything_else_is_a_users_file(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    path.write_text(rows)
    assert not is_predictions(path)


def test_a_file_is_read_a_line_at_a_time_and_a_huge_line_is_not_ours(tmp_path, monkeypatch):
    # a 2 GB file without a line break was read whole (4.3 GB of memory) before being refused
    import deploykit.predictions_file as module

    monkeypatch.setattr(module, "_LONGEST", 64)
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "' + "x" * 100 + '", "label": "pos", "score": 0.9}\n')
    assert not is_predictions(path)
    path.write_text('{"text": "x", "label": "pos", "score": 0.9}\n')
    assert is_predictions(path)
