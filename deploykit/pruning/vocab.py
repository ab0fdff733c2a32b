"""Vocabulary pruning: keep only the tokens a task's training texts use, plus special tokens.

    tokenizer, kept = prune_vocab(model, tokenizer, task.train.texts, task.train.pairs, scratch_dir)

The embedding matrix loses the other rows and `tokenizer.json` is rewritten with the kept tokens
renumbered in their old order. On any text made only of kept tokens the new tokenizer produces
the same pieces, so the model gives the same logits:
  - WordPiece picks the longest vocabulary prefix; every piece it picked is kept and nothing longer
    was in the vocabulary to begin with.
  - BPE also keeps every token that a kept token is merged from (and the merges between them);
    every merge that fired on a training word is kept, so the lowest-ranked applicable merge is
    the same one at every step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from deploykit.errors import UserError

# slow-tokenizer files that would describe the old vocabulary next to the new tokenizer.json
SLOW_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
# config fields holding token ids
ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


def used_ids(tokenizer, texts: list[str], pairs: list[str] | None, chunk: int = 2048) -> set[int]:
    """Every token id the tokenizer produces on the texts (untruncated), plus its special tokens."""
    ids: set[int] = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        args = (part,) if pairs is None else (part, pairs[start:start + chunk])
        for row in tokenizer(*args, truncation=False)["input_ids"]:
            ids.update(row)
    return ids


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    # tokenizers writes merges as "a b" strings (older) or [a, b] lists (newer)
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _bpe_closure(vocab: dict[str, int], merges: list[tuple[str, str]], keep: set[int]) -> set[int]:
    """Add every token a kept token is built from, recursively (see the module docstring)."""
    parts: dict[str, list[tuple[str, str]]] = {}
    for a, b in merges:
        parts.setdefault(a + b, []).append((a, b))
    id_to_tok = {i: t for t, i in vocab.items()}
    todo = [id_to_tok[i] for i in keep if i in id_to_tok]
    while todo:
        tok = todo.pop()
        for pair in parts.get(tok, ()):
            for piece in pair:
                if piece in vocab and vocab[piece] not in keep:
                    keep.add(vocab[piece])
                    todo.append(piece)
    return keep


def _remap_post_processor(node, new_id: dict[int, int]):
    """Renumber the special-token ids that TemplateProcessing / BertProcessing / RobertaProcessing hold."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                out[key] = [new_id[i] for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                out[key] = [value[0], new_id[value[1]]]
            else:
                out[key] = _remap_post_processor(value, new_id)
        return out
    if isinstance(node, list):
        return [_remap_post_processor(v, new_id) for v in node]
    return node


def rewrite_tokenizer_json(spec: dict, keep: list[int]) -> dict:
    """The tokenizers JSON with only `keep` (sorted old ids) in its vocabulary, renumbered 0..n-1."""
    new_id = {old: new for new, old in enumerate(keep)}
    model = dict(spec["model"])
    model["vocab"] = {tok: new_id[i] for tok, i in model["vocab"].items() if i in new_id}
    if model["type"] == "BPE":
        kept = model["vocab"]
        model["merges"] = [m for m, (a, b) in zip(model["merges"], _merge_pairs(model["merges"]))
                           if a in kept and b in kept and a + b in kept]
    out = {**spec, "model": model}
    out["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec.get("added_tokens", []) if t["id"] in new_id]
    if spec.get("post_processor"):
        out["post_processor"] = _remap_post_processor(spec["post_processor"], new_id)
    return out


def _alphabet(vocab: dict[str, int], prefix: str) -> set[int]:
    """Single-character pieces (`a`, `##a`): a word unseen in training still splits into pieces instead
    of collapsing to [UNK]. Seen words tokenize as before: greedy longest-match still finds their pieces."""
    return {i for tok, i in vocab.items() if len(tok) == 1 or (tok.startswith(prefix) and len(tok) == len(prefix) + 1)}


def _keep_ids(tokenizer, texts, pairs) -> tuple[dict, list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"prune.vocab: {type(tokenizer).__name__} has no tokenizer.json (fast tokenizer) to rewrite")
    spec = json.loads(backend.to_str())
    kind = spec["model"]["type"]
    if kind not in ("WordPiece", "BPE"):
        raise UserError(f"prune.vocab: {kind} tokenizers are not supported (WordPiece and BPE are)")
    keep = used_ids(tokenizer, texts, pairs) | {t["id"] for t in spec.get("added_tokens", [])}
    if kind == "WordPiece":
        keep |= _alphabet(spec["model"]["vocab"], spec["model"].get("continuing_subword_prefix", "##"))
    if kind == "BPE":
        keep = _bpe_closure(spec["model"]["vocab"], _merge_pairs(spec["model"]["merges"]), keep)
    return spec, sorted(keep)


def _write_tokenizer(tokenizer, spec: dict, keep: list[int], folder: Path):
    from transformers import AutoTokenizer

    shutil.rmtree(folder, ignore_errors=True)
    tokenizer.save_pretrained(folder)
    for name in SLOW_FILES:
        (folder / name).unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(rewrite_tokenizer_json(spec, keep), ensure_ascii=False))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if "added_tokens_decoder" in config:
        new_id = {old: new for new, old in enumerate(keep)}
        config["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in config["added_tokens_decoder"].items()
                                          if int(k) in new_id}
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return AutoTokenizer.from_pretrained(folder)


def _shrink_embeddings(model, keep: list[int]) -> None:
    new_id = {old: new for new, old in enumerate(keep)}
    old = model.get_input_embeddings()
    pad = new_id.get(old.padding_idx) if old.padding_idx is not None else None
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=pad,
                             dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(keep, device=old.weight.device)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    for name in ID_FIELDS:
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            setattr(model.config, name, new_id.get(value))
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is not None and isinstance(getattr(embeddings, "padding_idx", None), int):
        # RoBERTa numbers positions after the padding index
        embeddings.padding_idx = new_id[embeddings.padding_idx]


def prune_vocab(model, tokenizer, texts: list[str], pairs: list[str] | None, scratch: Path):
    """Shrink `model`'s input embeddings in place to the tokens `texts` use; return the new tokenizer
    (saved under `scratch`) and the kept old token ids."""
    spec, keep = _keep_ids(tokenizer, texts, pairs)
    new_tokenizer = _write_tokenizer(tokenizer, spec, keep, Path(scratch))
    if len(new_tokenizer) != len(keep):
        raise RuntimeError(f"rewritten tokenizer has {len(new_tokenizer)} tokens, expected {len(keep)}")
    _shrink_embeddings(model, keep)
    return new_tokenizer, keep
