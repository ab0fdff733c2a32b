"""Prompt/response data for causal LMs: instruction files, or a labelled task recast as generation.

    from deploykit.config import DataConfig
    cfg = DataConfig(name="sst2", data_dir="../shared/data", task="generation", label_names=["negative", "positive"],
                     prompt_template="Is this movie review positive or negative?\\n{sentence}")
    task = load_chat_task(cfg)                  # task.train.prompts[0], task.train.responses[0] == 'negative'
    ds = sft_dataset(task.train, tokenizer, cfg)   # input_ids + labels (-100 on prompt tokens)

Two kinds of rows, same files and lookup as deploykit/data.py (`<data_dir>/<name>/`, a path, or the hub):
  - instruction data: `data.response_column` names the reference answer (dolly's `output`);
  - classification as generation: no response column; the answer is the row's label name, and the
    task is scored by exact match (`deploykit.llm.evaluate.exact_match`).

Prompt and response are tokenized separately and concatenated, so training sees exactly the prompt
tokens that generation will be fed (a joint tokenization can merge tokens across the boundary).
"""

from __future__ import annotations

import random
import string
from types import SimpleNamespace
from dataclasses import dataclass

from deploykit.config import DataConfig
from deploykit.data import SPLIT_STEMS, _find_file, _local_folder, usable_positions
from deploykit.labels import label_vocab
from deploykit.errors import UserError
from deploykit.load_checks import first_blank
from deploykit.records import label_keys, read_rows, texts, where

PLAIN_ANSWER = "\nAnswer: "  # prompt/response separator when data.chat_template is false


@dataclass
class ChatSplit:
    prompts: list[str]     # user turns, template filled
    responses: list[str]   # reference answers

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, idx: list[int]) -> ChatSplit:
        return ChatSplit([self.prompts[i] for i in idx], [self.responses[i] for i in idx])

    def head(self, n: int | None) -> ChatSplit:
        return self if n is None or n >= len(self) else self.take(list(range(n)))


@dataclass
class ChatTask:
    train: ChatSplit
    validation: ChatSplit
    test: ChatSplit | None
    labels: list[str] | None   # the answer set when a classification task is recast as generation
    source: str

    def split(self, name: str) -> ChatSplit:
        if name == "test" and self.test is None:
            raise UserError(f"data {self.source}: has no test split (add a test file or data.test_split)")
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


# ---------------------------------------------------------------- rows -> prompts and responses

def _fields(template: str) -> list[str]:
    """The columns a template names, once each; config/data.py has refused every field but a plain {column}."""
    return list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def _prompts(rows: list[dict], cfg: DataConfig, origin: str) -> list[str]:
    """Each row's prompt. Every cell the template reads is text as records.texts takes it (a number as its digits, as
    classification reads it); a null, list or object cell is refused: str() made 'None' and "['a', 'b']" prompts.
    A prompt empty or invisible once filled is refused like an empty response: the model learns an answer to nothing.
    """
    template = cfg.prompt_template
    fields = _fields(template) if template else [cfg.text_column]
    for n, row in enumerate(rows, 1):
        if (missing := next((f for f in fields if f not in row), None)) is not None:
            raise UserError(f"{origin}: data.prompt_template names column {missing!r}, which {where(row, n)} "
                            f"does not have (columns: {', '.join(map(str, row))})")
    cells = {f: texts(rows, f, origin, empty_ok=True) for f in fields}
    # without a template the text column is the prompt as written: "{" + column + "}" would read a dotted name
    # ("a.b") as an attribute
    prompts = [(template.format_map({f: cells[f][i] for f in fields}) if template else cells[fields[0]][i]).strip()
               for i in range(len(rows))]
    if (blank := first_blank(prompts)) is not None:
        made = f"data.prompt_template {template!r} filled from the row" if template else f"column '{fields[0]}'"
        raise UserError(f"{origin}: {where(rows[blank], blank + 1)}: the prompt is empty or invisible characters only "
                        f"({made}); fill in the row's text, or remove the row")
    return prompts


def fill_prompts(rows: list[dict], template: str, origin: str) -> list[str]:
    """Each row's prompt by a model's `data.prompt_template`, as training built it (`deploykit predict --generate`
    of a file); UserError as in training for a missing column, a cell that is not text, an empty prompt."""
    return _prompts(rows, SimpleNamespace(prompt_template=template, text_column=None), origin)


def template_fields(template: str) -> list[str]:
    """The columns `template` names, once each, in order."""
    return _fields(template)


def _to_chat(rows: list[dict], cfg: DataConfig, label_names: list[str] | None, label_ids: dict | None,
             origin: str) -> ChatSplit:
    prompts = _prompts(rows, cfg, origin)
    if cfg.response_column:
        responses = [r.strip() for r in texts(rows, cfg.response_column, origin, empty_ok=True)]
        if (empty := first_blank(responses)) is not None:  # " \u200b " too: the model learns to answer nothing
            raise UserError(f"{origin}: {where(rows[empty], empty + 1)} has an empty '{cfg.response_column}' "
                            "(the response to learn)")
    else:
        responses = []
        for n, (row, key) in enumerate(zip(rows, label_keys(rows, cfg.label_column, origin)), 1):
            if key not in label_ids:
                raise UserError(f"{origin}: {where(row, n)} has label {key!r}, never seen in the training data")
            responses.append(label_names[label_ids[key]])
    return ChatSplit(prompts, responses)


def _rows_local(cfg: DataConfig, folder) -> tuple[dict[str, list[dict]], dict[str, str]]:
    if not folder.exists():
        raise UserError(f"{folder}: data path not found (data.path)")
    if folder.is_file():
        files = {"train": folder}
    else:
        files = {s: _find_file(folder, s, getattr(cfg, f"{s}_file")) for s in SPLIT_STEMS}
        if files["train"] is None:
            raise UserError(f"{folder}: no train file (train.tsv/.csv/.jsonl); set data.train_file")
        files = {s: p for s, p in files.items()
                 if p is not None and (s == "train" or p.resolve() != files["train"].resolve())}
    return ({s: read_rows(p, cfg.column_names) for s, p in files.items()}, {s: str(p) for s, p in files.items()})


def _rows_hub(cfg: DataConfig) -> tuple[dict[str, list[dict]], dict[str, str]]:
    from deploykit.data import hub_dataset

    ds = hub_dataset(cfg)
    names = {"train": "train", "validation": "validation", "test": "test"}
    return ({ours: [dict(r) for r in ds[hub]] for ours, hub in names.items() if hub in ds},
            {ours: f"hub:{cfg.name}/{hub}" for ours, hub in names.items() if hub in ds})


def _held_out(split: ChatSplit, fraction: float, seed: int) -> tuple[ChatSplit, ChatSplit]:
    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    n = max(1, round(len(idx) * fraction))
    return split.take(sorted(idx[n:])), split.take(sorted(idx[:n]))


def load_chat_task(cfg: DataConfig) -> ChatTask:
    """Load train/validation/test prompt-response splits; every bad input is a one-line UserError."""
    if cfg.task != "generation":
        raise UserError("data.task must be 'generation' for a causal LM (got 'classification')")
    folder = _local_folder(cfg)
    rows, origins = _rows_hub(cfg) if folder is None else _rows_local(cfg, folder)
    label_names = label_ids = None
    if not cfg.response_column:
        label_names, label_ids = label_vocab(label_keys(rows["train"], cfg.label_column, origins["train"]), cfg,
                                             origins["train"], rows["train"])
        if not cfg.label_names and all(n.isdigit() for n in label_names):
            raise UserError(f"{origins['train']}: labels are numbers; set data.label_names (the words to answer) "
                            "or data.response_column (instruction data)")
    splits = {s: _to_chat(r, cfg, label_names, label_ids, origins[s]) for s, r in rows.items()}
    train, test = splits["train"], splits.get("test")
    if test is None and cfg.test_split > 0:
        train, test = _held_out(train, cfg.test_split, cfg.seed)
    validation = splits.get("validation")
    if validation is None:
        train, validation = _held_out(train, cfg.validation_split, cfg.seed + 1)
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        idx = list(range(len(train)))
        random.Random(cfg.seed).shuffle(idx)
        train = train.take(sorted(idx[: cfg.max_train_samples]))
    validation = validation.head(cfg.max_eval_samples)
    source = origins["train"] if folder is None else str(folder)
    if len(train) == 0 or len(validation) == 0:
        raise UserError(f"data {source}: too few rows to train and validate")
    return ChatTask(train, validation, test, label_names, source)


# ---------------------------------------------------------------- rendering and tokenization

def check_chat_template(tokenizer, cfg: DataConfig, model_name: str) -> None:
    if cfg.chat_template and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {model_name}: its tokenizer has no chat template; use a chat/instruct model or "
                        "set data.chat_template: false (plain 'prompt\\nAnswer: response' text)")


def render_prompt(tokenizer, prompt: str, cfg: DataConfig) -> str:
    """The text a model is fed to answer `prompt`: chat turns + the assistant header, or plain."""
    from deploykit.llm.generate import chat_prompts

    if not cfg.chat_template:
        return prompt + PLAIN_ANSWER
    return chat_prompts(tokenizer, [prompt], cfg.system_prompt)[0]


def _response_text(tokenizer, response: str, cfg: DataConfig) -> str:
    """The response as the template closes it (ChatML: 'answer<|im_end|>\\n'), eos for plain text."""
    if not cfg.chat_template:
        return response + (tokenizer.eos_token or "")
    turns = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
    turns.append({"role": "user", "content": "x"})
    head = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(head):
        raise UserError("the tokenizer's chat template does not render an assistant turn after the generation "
                        "prompt; set data.chat_template: false")
    return full[len(head):]


def context_length(config) -> int | None:
    return usable_positions(config)


def check_length(cfg: DataConfig, config, model_name: str) -> None:
    limit = context_length(config)
    if limit and cfg.max_length != "auto" and cfg.max_length > limit:
        raise UserError(f"data.max_length={cfg.max_length} is longer than model {model_name}'s context "
                        f"({limit} tokens); lower data.max_length")


def sft_max_length(cfg: DataConfig, lengths: list[int]) -> int:
    """`data.max_length`, or for `auto` the 99th percentile of prompt + response tokens, a multiple of 8."""
    if cfg.max_length != "auto":
        return cfg.max_length
    import numpy as np

    if not lengths:
        raise UserError("data.max_length: auto needs rows to measure; give data.max_length a number")
    return max(8, -(-int(np.percentile(np.asarray(lengths), 99, method="inverted_cdf")) // 8) * 8)


def encode_sft(split: ChatSplit, tokenizer, cfg: DataConfig) -> tuple[list[dict], int]:
    """Token ids with `labels` = -100 on prompt tokens; returns (examples, rows truncated to max_length)."""
    prompts = [render_prompt(tokenizer, p, cfg) for p in split.prompts]
    responses = [_response_text(tokenizer, r, cfg) for r in split.responses]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    limit = sft_max_length(cfg, [len(p) + len(r) for p, r in zip(p_ids, r_ids)])
    examples, truncated = [], 0
    for p, r in zip(p_ids, r_ids):
        ids = (p + r)[:limit]
        truncated += len(p) + len(r) > limit
        labels = ([-100] * len(p) + r)[:limit]
        if all(t == -100 for t in labels):
            continue  # the prompt alone fills max_length: nothing to learn from this row
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return examples, truncated


def pack(examples: list[dict], block: int) -> list[dict]:
    """Concatenate examples into `block`-token rows (the last partial block is kept); labels travel along."""
    out, cur = [], {"input_ids": [], "labels": []}
    for ex in examples:
        cur["input_ids"] += ex["input_ids"]
        cur["labels"] += ex["labels"]
        while len(cur["input_ids"]) >= block:
            out.append({"input_ids": cur["input_ids"][:block], "labels": cur["labels"][:block]})
            cur = {k: v[block:] for k, v in cur.items()}
    if cur["input_ids"]:
        out.append(cur)
    for row in out:
        row["attention_mask"] = [1] * len(row["input_ids"])
    return out


def sft_examples(split: ChatSplit, tokenizer, cfg: DataConfig) -> list[dict]:
    """encode_sft's examples; a UserError when every prompt fills max_length and leaves nothing to learn."""
    examples, _ = encode_sft(split, tokenizer, cfg)
    if not examples:
        raise UserError(f"data.max_length={cfg.max_length}: every prompt fills it; raise data.max_length")
    return examples


def check_sft_fits(cfg: DataConfig, config, tokenizer, task: ChatTask | None, model_name: str) -> None:
    """What finetune refuses before it trains, by the calls it makes, for `deploykit validate` to say first: a chat
    template the tokenizer lacks, a max_length past the context, prompts that fill max_length (`task`: when loaded)."""
    check_chat_template(tokenizer, cfg, model_name)
    check_length(cfg, config, model_name)
    if task is not None and cfg.max_length != "auto":  # auto is at least most rows' prompt + response
        for split in (task.train, task.validation):
            sft_examples(split, tokenizer, cfg)


def sft_dataset(split: ChatSplit, tokenizer, cfg: DataConfig, packing: bool = False):
    import datasets

    examples = sft_examples(split, tokenizer, cfg)
    if packing:
        examples = pack(examples, max(len(e["input_ids"]) for e in examples) if cfg.max_length == "auto"
                        else cfg.max_length)
    return datasets.Dataset.from_list(examples)


class SFTCollator:
    """Right-pads input_ids (pad id), attention_mask (0) and labels (-100) to the longest row."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        out = {}
        for key, fill in (("input_ids", self.pad_id), ("attention_mask", 0), ("labels", -100)):
            out[key] = torch.tensor([list(f[key]) + [fill] * (width - len(f[key])) for f in features])
        for key in features[0]:  # cached teacher top-k and the like pass through untouched
            if key not in out:
                out[key] = [f[key] for f in features]
        return out


def pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise UserError("the tokenizer has neither a pad nor an eos token; cannot batch")
