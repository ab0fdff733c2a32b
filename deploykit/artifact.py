"""What a stage hands the next: a folder plus `manifest.json`.

Formats: `pytorch` (a `save_pretrained` folder), `onnx` (model.onnx + config.json + tokenizer, the
layout Optimum's ORTModel classes read), `tensorrt` (an engine next to its ONNX parent's files).
Any Hugging Face classifier folder without a manifest is accepted as a `pytorch` artifact.

Outputs are written through `staging(out_dir)`: a temporary sibling folder renamed into place at
the end, so an interrupted stage never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from deploykit.errors import UserError

MANIFEST = "manifest.json"


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return self.manifest.get("format", "pytorch")

    @property
    def stage(self) -> str | None:
        return self.manifest.get("stage")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.get("onnx_file", "model.onnx")

    def describe(self) -> str:
        return f"{self.path} ({self.format}{', ' + self.stage if self.stage else ''})"


def load_artifact(path: str | Path) -> Artifact:
    """Open a stage output, a plain HF folder, a folder holding model.onnx, or a bare .onnx file."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".onnx":
        return Artifact(p.parent, {"format": "onnx", "onnx_file": p.name})
    if not p.exists():
        raise UserError(f"{p}: artifact not found (give a stage output folder, a HF model folder or a .onnx file)")
    if not p.is_dir():
        raise UserError(f"{p}: not an artifact (expected a folder or a .onnx file)")
    mf = p / MANIFEST
    if mf.is_file():
        try:
            return Artifact(p, json.loads(mf.read_text()))
        except json.JSONDecodeError as err:
            raise UserError(f"{mf}: manifest is not valid JSON ({err.msg}); re-run the stage that wrote it") from None
    if (p / "model.onnx").is_file():
        return Artifact(p, {"format": "onnx", "onnx_file": "model.onnx"})
    if (p / "config.json").is_file():
        return Artifact(p, {"format": "pytorch"})
    raise UserError(f"{p}: no manifest.json, config.json or model.onnx inside; not a model folder")


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "torch-pruning",
                 "onnx", "onnxruntime", "onnxruntime-gpu", "deploykit"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def config_hash(*parts: Any) -> str:
    """Content hash of a stage's resolved config and its input artifact's hash (for resume)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_manifest(folder: Path, *, stage: str, format: str, parent: Artifact | None,
                   config: dict[str, Any], metrics: dict[str, Any] | None = None,
                   **extra: Any) -> dict[str, Any]:
    manifest = {
        "stage": stage,
        "format": format,
        "parent": None if parent is None else {
            "path": str(parent.path), "stage": parent.stage, "format": parent.format,
            "hash": parent.manifest.get("hash")},
        "config": config,
        "metrics": metrics or {},
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    manifest.setdefault("hash", config_hash(stage, config, manifest["parent"]))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


@contextlib.contextmanager
def staging(out_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `out_dir`, on failure it is removed."""
    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
