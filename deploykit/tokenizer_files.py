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
