"""The check after a GGUF file is written: read it back and compare greedy tokens with PyTorch.

    from deploykit.llm.gguf_check import check_gguf
    parity = check_gguf(model, tokenizer, "runs/chat/export/model.gguf", "q8_0", prompts)
    parity["agreement"]   # share of greedy tokens the file generates as the PyTorch model does

Three comparisons, on rendered task prompts, `new_tokens` greedy tokens each:
1. The file as written (f32, f16, q8_0): transformers' GGUF loader reads it back (tokenizer and model, as
   `deploykit.load` does); its tokenizer must give the same ids as the HF one, and its greedy tokens must
   equal those of the PyTorch model with its weights rounded the way the file stores them (the same
   `gguf.quants` round trip), prefill logits within `atol`. Exact, so a wrong name, permutation or
   metadata key fails here whatever the type; a K-quant (llama.cpp's quantizer) has no such reference.
2. Agreement with the original float model: along the float model's greedy answer to each prompt (up to its
   stop token), the share of positions where the file predicts the same next token (top-1, teacher-forced: one fork early in a
   free-text answer would otherwise count every later token as lost). f32 gives 1.0; f16 and q8_0 round the
   weights, so near ties can flip. Below `min_agreement` (export.gguf_min_agreement) the export fails.
   How many prompts get the very same greedy continuation is recorded too (`greedy_equal`).
3. llama.cpp itself, where `llama_cpp` (llama-cpp-python) is importable: its tokens from the same prompt
   ids, and its own tokenization of the prompts, recorded beside the above (reported, not gated).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from deploykit.console import log
from deploykit.errors import ParityError


def _prefix_share(want: np.ndarray, got: np.ndarray) -> float:
    """Tokens equal up to the first difference, over all tokens of the row."""
    differs = np.flatnonzero(np.asarray(want) != np.asarray(got))
    return (differs[0] if differs.size else len(want)) / max(len(want), 1)


def agreement(want: np.ndarray, got: np.ndarray) -> float:
    """Mean over rows of the greedy tokens `got` shares with `want` before the first difference (llama.cpp's
    generated tokens, where no logits are compared)."""
    return float(np.mean([_prefix_share(w, g) for w, g in zip(want, got)]))


def top1_agreement(reference, candidate, tokenizer, prompts: list[str], answer: np.ndarray,
                   lengths: np.ndarray) -> float:
    """Share of the positions of `answer` (the reference's greedy tokens, row i counted up to lengths[i]: its stop
    token included, what follows it not) where both generators' full-sequence logits put the same token first."""
    from deploykit.llm.generate import encode

    ids, mask = encode(tokenizer, prompts)
    ids = np.concatenate([ids, answer], axis=1)
    mask = np.concatenate([mask, np.ones_like(answer)], axis=1)
    at = slice(ids.shape[1] - answer.shape[1] - 1, ids.shape[1] - 1)  # the logits that predict each answer token
    want = reference.logits(ids, mask)[:, at].argmax(-1)
    counted = np.arange(answer.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return float(np.mean((want == candidate.logits(ids, mask)[:, at].argmax(-1))[counted]))


def as_stored(model, gguf_type: str):
    """A copy of `model` whose weights are what the GGUF file holds (rounded per tensor type), read as float32."""
    import torch

    from deploykit.llm.gguf_export import stored, tensor_type

    if gguf_type == "f32":
        return model
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in twin.named_parameters():  # a tied lm_head is the embedding: rounded once, as in the file
            array = param.detach().float().cpu().numpy()
            param.copy_(torch.from_numpy(stored(array, tensor_type(name, array, gguf_type))))
    return twin


def _tokenizer_check(tokenizer, reread, prompts: list[str]) -> None:
    for prompt in prompts:
        want, got = tokenizer(prompt)["input_ids"], reread(prompt)["input_ids"]
        if want != got:
            raise ParityError(f"export: the GGUF file's tokenizer splits parity prompt {prompt[:60]!r} into other "
                              f"ids ({len(got)} tokens, not {len(want)}); the tokenizer was not written right")


def check_gguf(model, tokenizer, path: str | Path, gguf_type: str, prompts: list[str], *, new_tokens: int = 16,
               min_agreement: float = 0.85, atol: float = 1e-4) -> dict:
    """Read `path` back and compare it with `model` on `prompts` (the three comparisons above).

    Returns:
        {"prompts", "new_tokens", "reader", "stored_tokens_equal" (None for a K-quant), "prefill_max_abs_diff",
         "agreement", "min_agreement", "greedy_equal", "llama_cpp" (None when not installed)}.

    Raises:
        ParityError: naming what differs (tokenizer ids, tokens or logits of the stored weights, agreement).
    """
    from deploykit.llm.generate import TorchGenerator, encode
    from deploykit.llm.gguf_export import K_QUANTS
    from deploykit.models import load_causal_lm, load_tokenizer

    path = Path(path)
    reread_tokenizer = load_tokenizer(str(path))
    _tokenizer_check(tokenizer, reread_tokenizer, prompts)
    reread = TorchGenerator(load_causal_lm(str(path)), reread_tokenizer)
    got = reread.generate(prompts, new_tokens, stop_ids=[]).tokens
    report = {"prompts": len(prompts), "new_tokens": new_tokens, "reader": "transformers",
              "stored_tokens_equal": None, "prefill_max_abs_diff": None}
    if gguf_type not in K_QUANTS:
        reference = TorchGenerator(as_stored(model, gguf_type), tokenizer)
        ids, mask = encode(tokenizer, prompts)
        delta = float(np.abs(reference.logits(ids, mask) - reread.logits(ids, mask)).max())
        if not delta <= atol:  # also catches NaN
            raise ParityError(f"export: the GGUF file's prefill logits differ by {delta:.2e} > {atol:g} from PyTorch "
                              f"with the weights the file stores ({gguf_type}); the file was not written right")
        want = reference.generate(prompts, new_tokens, stop_ids=[]).tokens
        if not np.array_equal(want, got):
            raise ParityError(f"export: the GGUF file's greedy tokens differ from PyTorch with the weights the file "
                              f"stores ({gguf_type}), agreement {agreement(want, got):.3f}; the file was not written right")
        report.update(stored_tokens_equal=True, prefill_max_abs_diff=delta)
    float_model = TorchGenerator(model, tokenizer)
    answers = float_model.generate(prompts, new_tokens)  # to the model's stop token: what follows is no answer
    share = top1_agreement(float_model, reread, tokenizer, prompts, answers.tokens, answers.lengths)
    original = float_model.generate(prompts, new_tokens, stop_ids=[]).tokens
    report.update(agreement=share, min_agreement=min_agreement,
                  greedy_equal=int(sum(np.array_equal(a, b) for a, b in zip(original, got))),
                  llama_cpp=_llama_cpp(path, tokenizer, prompts, original, new_tokens))
    if share < min_agreement:
        raise ParityError(f"export: the {gguf_type} GGUF file predicts PyTorch's greedy next token at {share:.1%} of "
                          f"the positions of {len(prompts)} parity answers, under export.gguf_min_agreement "
                          f"{min_agreement:g}; "
                          "use a wider gguf_type (f16) or lower the bound")
    log(f"export: {path.name} ({gguf_type}) read back by transformers: top-1 agreement {share:.1%} with PyTorch, "
        f"the same greedy answer on {report['greedy_equal']}/{len(prompts)} prompts" + ("" if report["stored_tokens_equal"] is None else
                                     f", stored weights token for token (Δ {report['prefill_max_abs_diff']:.1e})"))
    return report


def _llama_cpp(path: Path, tokenizer, prompts: list[str], original: np.ndarray, new_tokens: int) -> dict | None:
    """llama.cpp's greedy tokens from the HF prompt ids and its own tokenization (BOS as the file says); None
    without llama-cpp-python. Not run on the machines this was written on (no wheel; see README)."""
    from deploykit.llm.llama_cpp_gen import llama_cpp_missing

    if llama_cpp_missing():
        return None
    from llama_cpp import Llama

    ids = [tokenizer(p)["input_ids"] for p in prompts]
    llm = Llama(model_path=str(path), n_ctx=max(map(len, ids)) + new_tokens + 8, verbose=False)
    same_ids = sum(llm.tokenize(p.encode(), add_bos=True, special=True) == i for p, i in zip(prompts, ids))
    rows = []
    for row in ids:
        tokens = []
        for token in llm.generate(row, top_k=1, top_p=1.0, temp=0.0, reset=True):
            tokens.append(token)
            if len(tokens) == new_tokens:
                break
        rows.append(tokens + [-1] * (new_tokens - len(tokens)))
    share = agreement(original, np.asarray(rows))
    log(f"export: llama.cpp reads {path.name}: {share:.1%} of PyTorch's greedy tokens, its tokenizer agrees on "
        f"{same_ids}/{len(prompts)} prompts")
    return {"agreement": share, "tokenizer_equal": int(same_ids)}
