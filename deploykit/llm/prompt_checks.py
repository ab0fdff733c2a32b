"""What every causal-LM generator refuses before it tokenizes, each in one line naming the fix (UserError): prompts
that are not a str or a list of str, text no tokenizer takes or with nothing to answer, and sampling arguments out of
range. `deploykit generate`, `deploykit predict --generate` and `deploykit.load(folder).generate` all pass here.

    prompts = check_request(["Hi"], 32, temperature=1.0, top_k=0, top_p=1.0, stop_ids=None)
    check_texts(["Hi", ""])   # UserError: generate: prompt 1 is an empty text (or invisible characters only); ...
"""

from __future__ import annotations

from numbers import Integral, Real

from deploykit.errors import UserError
from deploykit.load_checks import first_blank, unicode_fault


def check_texts(texts: list[str], what: str = "prompt") -> None:
    """Refuse what the classifiers refuse (deploykit/load_checks.py): a lone surrogate (undecodable bytes of an
    argument), which the tokenizers library meets with a TypeError, and a text with no visible character, which
    tokenizes to no ids at all ("cannot reshape tensor of 0 elements") or to the special tokens alone.

    Args:
        texts: the user's texts, before a chat template wraps them (a rendered prompt is never blank).
        what: what the line calls one of them ("prompt", "system prompt").
    """
    for i, text in enumerate(texts):
        if fault := unicode_fault(text):
            name = f"{what} {i}" if len(texts) > 1 else f"the {what}"
            raise UserError(f"generate: {name} {text!r:.40} is not valid Unicode text ({fault}); decode it with "
                            "errors='replace' or remove that character")
    if (blank := first_blank(texts)) is not None:
        name = f"{what} {blank}" if len(texts) > 1 else f"the {what}"
        raise UserError(f"generate: {name} is an empty text (or invisible characters only); give its words")


def check_request(prompts, max_new_tokens, temperature, top_k, top_p, stop_ids, seed=0) -> list[str]:
    """The prompts as a list (one str is one prompt), or UserError naming the argument a generate() call got wrong:
    a str is not split into characters, and a NaN temperature or a top_p of 2 does not quietly sample otherwise."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise UserError(f"generate: prompts must be a str or a non-empty list of str, not {prompts!r:.60}")
    if (bad := next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)) is not None:
        raise UserError(f"generate: prompt {bad} is {type(prompts[bad]).__name__} {prompts[bad]!r:.60}, not a str")
    check_texts(list(prompts))
    for name, value, least in (("max_new_tokens", max_new_tokens, 1), ("top_k", top_k, 0), ("seed", seed, 0)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < least:
            raise UserError(f"generate: {name}={value!r} must be an integer of at least {least}")
    if not isinstance(temperature, Real) or not 0 < temperature < float("inf"):
        raise UserError(f"generate: temperature={temperature!r} must be a number > 0 (do_sample=False for greedy)")
    if not isinstance(top_p, Real) or not 0 < top_p <= 1:
        raise UserError(f"generate: top_p={top_p!r} must be in (0, 1]")
    if stop_ids is not None and (not isinstance(stop_ids, (list, tuple)) or not all(
            isinstance(i, Integral) and not isinstance(i, bool) for i in stop_ids)):
        raise UserError(f"generate: stop_ids={stop_ids!r:.60} must be a list of token ids (int)")
    return list(prompts)
