"""Whether a model folder holds its tokenizer's vocabulary: checked by every way a folder is loaded (training's
`load_tokenizer`, `deploykit validate`, the predictors), so it imports nothing of deploykit but its errors."""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserError

TOKENIZER_FILES = "tokenizer.json, vocab.txt, vocab.json + merges.txt or a sentencepiece *.model"


def check_tokenizer_files(folder: Path) -> None:
    """Refuse a folder whose tokenizer has no vocabulary file: it would load as special tokens only."""
    if ((folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or any(folder.glob("*.model"))):
        return
    raise UserError(f"{folder}: no tokenizer files ({TOKENIZER_FILES}); copy them from the folder the model came "
                    "from (the stage output), or every word would be read as unknown")


def check_vocabulary(folder: Path, tokenizer, config) -> None:
    """Refuse a tokenizer far smaller than the model's embedding table (another model's, or a stub).

    A vocabulary-pruned model has its config.vocab_size cut to its tokenizer's, so it passes; half is a margin
    wide enough for tokenizers that count their added tokens differently from the model.
    """
    size = getattr(config, "vocab_size", None)
    if isinstance(size, int) and len(tokenizer) < size / 2:
        raise UserError(f"{folder}: the tokenizer holds {len(tokenizer)} tokens but config.json's vocab_size is "
                        f"{size}; the tokenizer files ({TOKENIZER_FILES}) are missing or not this model's: copy "
                        "them from the folder the model came from")
