"""deploykit/ner/metric.py: entity-level scores by seqeval, over words."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ner_tokenizers import minilm_tokenizer

from deploykit.ner.align import encode_words
from deploykit.ner.metric import entity_scores, window_scores

# Entities (type, first word, last word):
#   sentence 1  gold PER(0,1) LOC(3)          predicted PER(0,1) ORG(3)     PER right; LOC missed, ORG wrong
#   sentence 2  gold ORG(0,1) PER(3)          predicted ORG(0,0) PER(3)     ORG ends early: wrong; PER right
#   sentence 3  gold none                     predicted MISC(0)             wrong
# gold 4 entities, predicted 5, correct 2: precision 2/5 = 40, recall 2/4 = 50,
# F1 = 2 * 0.4 * 0.5 / (0.4 + 0.5) = 0.4 / 0.9 = 44.444 (rounded to 3 places)
# per type: PER 2 of 2 right both ways -> 100; LOC 0 of 1 -> 0; ORG 0 right of 1 gold, 2 predicted -> 0;
# MISC 0 right, 1 predicted -> 0
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"], ["O", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O", "B-PER"], ["B-MISC", "O"]]
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_hand_computed_example_agrees_with_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score

    scores = entity_scores(GOLD, PRED)
    assert scores == {"f1": 44.444, "precision": 40.0, "recall": 50.0,
                      "per_type": {"LOC": 0.0, "MISC": 0.0, "ORG": 0.0, "PER": 100.0}, "entities": 4, "n": 3}
    assert scores["f1"] == round(f1_score(GOLD, PRED) * 100, 3)
    assert scores["precision"] == round(precision_score(GOLD, PRED) * 100, 3)
    assert scores["recall"] == round(recall_score(GOLD, PRED) * 100, 3)


def test_ids_score_as_their_names():
    ids = {name: i for i, name in enumerate(LABELS)}
    gold = [[ids[t] for t in s] for s in GOLD]
    pred = [np.asarray([ids[t] for t in s]) for s in PRED]  # numpy ids, as argmax gives them
    assert entity_scores(gold, pred, LABELS) == entity_scores(GOLD, PRED)
    with pytest.raises(ValueError, match="pass the label names"):
        entity_scores(gold, PRED)


def test_conlleval_reading_of_stray_inside_tags_and_strict_iob2():
    gold = [["O", "I-PER", "I-PER"]]  # IOB1-style: the entity starts with I-
    pred = [["O", "B-PER", "I-PER"]]
    assert entity_scores(gold, pred)["f1"] == 100.0  # conlleval: I- after O starts PER(1,2), as predicted
    strict = entity_scores(gold, pred, strict=True)
    assert strict["entities"] == 0 and strict["precision"] == 0.0  # strict IOB2: the gold I- starts nothing


def test_shapes_must_match_and_no_entities_scores_zero_without_warnings():
    with pytest.raises(ValueError, match="sentence 1: 4 gold tags but 3 predicted"):
        entity_scores(GOLD, [PRED[0], PRED[1][:3], PRED[2]])
    with pytest.raises(ValueError, match="3 gold sentences but 2 predicted"):
        entity_scores(GOLD, PRED[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = entity_scores([["O", "O"]], [["O", "O"]])
    assert empty == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "per_type": {}, "entities": 0, "n": 1}


def test_window_scores_are_over_words_not_pieces():
    tok = minilm_tokenizer()
    # "Lewandowski" is 3 pieces, "Gascoigne" 4: scored once each, as words
    tokens = [["Peter", "Lewandowski", "met", "Gascoigne", "in", "Ouagadougou"] * 4, ["Brussels"]]
    ids = {name: i for i, name in enumerate(LABELS)}
    tags = [[ids[t] for t in ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"] * 4], [ids["B-LOC"]]]
    win = encode_words(tokens, tok, max_length=16, stride=4, tags=tags)
    assert len(win) > 2
    logits = []
    for k, s in enumerate(win.sentence_of):  # every scored piece predicts its gold tag, every other piece B-MISC
        row = np.zeros((len(win.encoding["input_ids"][k]), len(LABELS)), dtype=np.float32)
        row[:, ids["B-MISC"]] = 1.0
        for w, p in win.owned[k]:
            row[p, tags[s][w]] = 5.0
        logits.append(row)
    scores = window_scores(logits, win, tags, LABELS)
    assert scores["f1"] == 100.0 and scores["entities"] == 13 and scores["n"] == 2
    assert scores["per_type"] == {"LOC": 100.0, "PER": 100.0}
