"""deploykit/llm/data.py: prompt/response splits, chat rendering, response-only labels, packing, bad input."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from deploykit.config import DataConfig
from deploykit.errors import UserError
from deploykit.llm.data import (SFTCollator, check_chat_template, check_length, encode_sft, load_chat_task, pack,
                                render_prompt)

TEMPLATE = "Is this review positive or negative?\n{sentence}"


def gen_cfg(path, **kw) -> DataConfig:
    fields = dict(path=str(path), task="generation", label_names=["negative", "positive"], prompt_template=TEMPLATE,
                  max_length=64)
    fields.update(kw)
    return DataConfig(**fields)


def test_classification_rows_become_prompts_answered_by_label_names(tiny_task):
    task = load_chat_task(gen_cfg(tiny_task))
    assert task.labels == ["negative", "positive"]
    assert len(task.train) == 64 and len(task.validation) == 32 and len(task.test) == 32
    assert task.train.prompts[0].startswith("Is this review positive or negative?\n")
    assert set(task.train.responses) == {"negative", "positive"}


def test_instruction_rows_use_the_response_column(tmp_path):
    rows = [{"instruction": f"Say {i}", "input": "" if i % 2 else "ctx", "output": f"answer {i}"} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DataConfig(path=str(tmp_path), task="generation", prompt_template="{instruction}\n\n{input}",
                     response_column="output", validation_split=0.2)
    task = load_chat_task(cfg)
    assert task.labels is None and len(task.train) == 16 and len(task.validation) == 4
    i = task.train.responses.index("answer 1")
    assert task.train.prompts[i] == "Say 1"   # an empty input leaves no trailing blank lines


def test_labels_cover_only_the_response(tiny_llama, tiny_task):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = gen_cfg(tiny_task)
    task = load_chat_task(cfg)
    (ex,), truncated = encode_sft(task.train.head(1), tok, cfg)
    prompt_ids = tok(render_prompt(tok, task.train.prompts[0], cfg), add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids and truncated == 0
    assert ex["labels"][:n] == [-100] * n
    answer = tok.decode([t for t in ex["labels"] if t != -100])
    assert answer == task.train.responses[0] + "<|im_end|>\n"


def test_plain_format_for_base_models(tiny_llama, tiny_task):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = gen_cfg(tiny_task, chat_template=False)
    assert render_prompt(tok, "Review", cfg) == "Review\nAnswer: "
    (ex,), _ = encode_sft(load_chat_task(cfg).train.head(1), tok, cfg)
    assert tok.decode([t for t in ex["labels"] if t != -100]).endswith("<|im_end|>")


def test_truncation_and_packing(tiny_llama, tiny_task):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = gen_cfg(tiny_task, max_length=40)
    examples, truncated = encode_sft(load_chat_task(cfg).train, tok, cfg)
    assert truncated > 0 and all(len(e["input_ids"]) <= 40 for e in examples)
    packed = pack(examples, 40)
    assert all(len(r["input_ids"]) == 40 for r in packed[:-1])
    flat = [t for e in examples for t in e["labels"]]
    assert [t for r in packed for t in r["labels"]] == flat


def test_collator_pads_labels_with_ignore_index():
    batch = SFTCollator(pad_id=0)([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
                                  {"input_ids": [5], "attention_mask": [1], "labels": [5]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]


def test_bad_inputs(tiny_llama, tiny_task, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    with pytest.raises(UserError, match="names column 'review'"):
        load_chat_task(gen_cfg(tiny_task, prompt_template="{review}"))
    with pytest.raises(UserError, match="no column 'output'"):
        load_chat_task(gen_cfg(tiny_task, response_column="output"))
    with pytest.raises(UserError, match="labels are numbers; set data.label_names"):
        load_chat_task(gen_cfg(tiny_task, label_names=None))
    tok.chat_template = None
    with pytest.raises(UserError, match="has no chat template"):
        check_chat_template(tok, gen_cfg(tiny_task), "tiny")
    from transformers import AutoConfig

    with pytest.raises(UserError, match="longer than model tiny's context"):
        check_length(gen_cfg(tiny_task, max_length=1024), AutoConfig.from_pretrained(tiny_llama), "tiny")
    with pytest.raises(Exception, match="need task: generation"):
        DataConfig(path=str(tiny_task), prompt_template="{sentence}")


def test_label_match_reads_sentence_answers():
    from deploykit.llm.quality import label_match

    preds = ["The review is positive.", "negative", "It is positive and negative", "Positive!", "unclear"]
    refs = ["positive", "negative", "positive", "negative", "positive"]
    assert label_match(preds, refs) == 40.0
