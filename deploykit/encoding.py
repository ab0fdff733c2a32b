"""Token ids for the predictor straight from the Rust tokenizer (`tokenizers.Tokenizer.encode_batch`).

Why not the transformers call the rest of deploykit uses: for one short text its Python layer costs as much as
the Rust encoding, and the ONNX Runtime call after it ran slower too: on SST-2's final graph (2-core AMX Xeon,
2026-12-03) tokenizer + model took 0.75 ms per text through it and 0.63 ms through the backend, where the model
alone takes 0.56 ms (bench/README.md, twenty-eighth session). A server answers one text per request, so that is
the gap between the end-to-end latency and the model's. The backend gets the very settings the transformers call
would give it (truncation, padding, special tokens), on a private copy so that the caller's tokenizer is untouched,
and a probe at load time must give the transformers call's ids to the token, else the predictor keeps that call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deploykit.data import Split, encode

# the transformers input name -> the attribute of a `tokenizers.Encoding` that holds it
FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
# texts the load-time probe encodes both ways: accents, casing, an unknown script, spacing, a special token
PROBE = ["Hello, world!", "naïve CAFÉ déjà-vu ✓ 東京", "  spaced\tout \n text  ", "[SEP] inside [CLS] text", "a"]

Encoder = Callable[[Split], dict[str, np.ndarray]]


def transformers_encoder(tokenizer, max_length: int) -> Encoder:
    """The transformers tokenizer call (`deploykit.data.encode`), padded to the longest row, as int64 arrays."""
    def reference(split: Split) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.int64) for k, v in encode(split, tokenizer, max_length, padding=True,
                                                                        return_tensors="np").items()}

    return reference


def encoder_for(tokenizer, max_length: int) -> Encoder:
    """A function from a Split to the model's inputs, each int64 [rows, longest row], truncated to `max_length`.

    It encodes with the Rust backend of a fast tokenizer when the load-time probe (PROBE, a text over
    `max_length`, and a sentence pair) gives the transformers call's ids, type ids and mask exactly; otherwise
    (a slow tokenizer, inputs the backend does not give, any difference) it is that call (`deploykit.data.encode`).
    """
    reference = transformers_encoder(tokenizer, max_length)
    backend = _backend_copy(tokenizer, max_length)
    if backend is None:
        return reference
    names = [n for n in tokenizer.model_input_names if n in FIELDS]

    def fast(split: Split) -> dict[str, np.ndarray]:
        rows = split.texts if split.pairs is None else list(zip(split.texts, split.pairs))
        encodings = backend.encode_batch(rows)
        return {n: np.array([getattr(e, FIELDS[n]) for e in encodings], dtype=np.int64) for n in names}

    long_text = " ".join(["word"] * (max_length + 8))
    probes = [Split(PROBE + [long_text], None, [0] * (len(PROBE) + 1)),
              Split(PROBE[:2] + [long_text], [long_text, PROBE[2], PROBE[3]], [0] * 3)]
    for probe in probes:
        want, got = reference(probe), fast(probe)
        if set(want) != set(got) or any(not np.array_equal(want[k], got[k]) for k in want):
            return reference
    return fast


def _backend_copy(tokenizer, max_length: int):
    """A private copy of a fast tokenizer's backend, configured as the transformers call configures it for
    `truncation=True, max_length, padding=True`; None where there is no backend to copy or no pad token."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or tokenizer.pad_token is None or set(tokenizer.model_input_names) - set(FIELDS):
        return None
    copy = Tokenizer.from_str(backend.to_str())
    copy.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    copy.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                        pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token)
    copy.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return copy
