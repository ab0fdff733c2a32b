"""What a stage hands the next: a folder plus `manifest.json`.

Formats: `pytorch` (a `save_pretrained` folder), `onnx` (model.onnx + config.json + tokenizer, the
layout Optimum's ORTModel classes read), `tensorrt` (an engine next to its ONNX parent's files).
Any Hugging Face classifier folder without a manifest is accepted as a `pytorch` artifact.

Outputs are written through `staging(out_dir)`: a temporary sibling folder renamed into place at the end, so an
interrupted stage never leaves a folder that looks complete. deploykit replaces only what it wrote itself:
`check_out_dir` refuses, before any work starts, an `--out` deploykit may not replace (its docstring lists them;
`staging` checks again as a last guard).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterator

from deploykit.config import STAGES
from deploykit.errors import UserError
from deploykit.file_modes import readable_as_umask
from deploykit.manifest_fields import check_fields

MANIFEST = "manifest.json"
RUN_STATE = "pipeline.json"  # marks a `deploykit run` folder (deploykit/pipeline.py writes it)
REPORT = "report.json"  # marks a `deploykit bench` report folder
# deploykit's own scratch beside an output: staging's .<name>.tmp-<pid>, .<name>.old-<pid>; .<name>.work checkpoints
OWN_SCRATCH = re.compile(r"^\..+\.(tmp-\d+|old-\d+|work)$")
# the scratch deploykit leaves *inside* an output folder, which alone counts as empty (a run folder's stage scratch,
# a bench's baseline scratch, the run state's temporary file); a user's own `.my.work` is never deleted with it
INNER_SCRATCH = re.compile(r"^\.(%s)\.(tmp-\d+|old-\d+|work)$|^\.%s\.tmp$" % (
    "|".join(map(re.escape, (*STAGES, "baseline"))), re.escape(RUN_STATE)))


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
    """Open a stage output, a plain HF folder, a folder holding model.onnx, or a bare .onnx file (which takes
    the manifest of the folder it sits in, when there is one)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"artifact path {path!r}: give a folder path (str or pathlib.Path)")
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".onnx":
        # a graph inside a deploykit folder is that folder's model: its manifest holds the trained max_length
        beside = _read_manifest(p.parent / MANIFEST) if (p.parent / MANIFEST).is_file() else {}
        return Artifact(p.parent, {**beside, "format": "onnx", "onnx_file": p.name})
    if not p.exists():
        raise UserError(f"{p}: artifact not found (give a stage output folder, a HF model folder or a .onnx file)")
    if not p.is_dir():
        raise UserError(f"{p}: not an artifact (expected a folder or a .onnx file)")
    if (p / MANIFEST).is_file():
        return Artifact(p, _read_manifest(p / MANIFEST))
    if (p / "model.onnx").is_file():
        return Artifact(p, {"format": "onnx", "onnx_file": "model.onnx"})
    if (p / "config.json").is_file():
        return Artifact(p, {"format": "pytorch"})
    raise UserError(f"{p}: no manifest.json, config.json or model.onnx inside; not a model folder")


def _read_manifest(mf: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{mf}: manifest is not valid JSON ({err.msg}); re-run the stage that wrote it") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{mf}: manifest is not a JSON object; re-run the stage that wrote it")
    check_fields(manifest, mf)
    return manifest


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
        # absolute: a relative --from would name a folder relative to wherever the reader stands
        "parent": None if parent is None else {
            "path": str(Path(parent.path).resolve()), "stage": parent.stage, "format": parent.format,
            "hash": parent.manifest.get("hash")},
        "config": config,
        "metrics": metrics or {},
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    if parent is not None and "max_length" not in manifest and parent.manifest.get("max_length"):
        manifest["max_length"] = parent.manifest["max_length"]  # the length the model was trained with
    if parent is not None and "window_stride" not in manifest and parent.manifest.get("window_stride") is not None:
        # a model trained on windows is scored on windows (deploykit/windows.py), wherever it goes next
        manifest.update(long_texts="windows", window_stride=parent.manifest["window_stride"])
    # what the model reads (single texts or pairs, a causal LM's prompt_template) goes on into stages with no data section
    if parent is not None and isinstance(parent.manifest.get("columns"), dict):
        manifest["columns"] = parent.manifest["columns"]
    for source in (config, parent.manifest.get("config") if parent is not None else None):
        data = source.get("data") if isinstance(source, dict) else None
        if isinstance(data, dict) and "text_pair_column" in data:
            keys = ("text_column", "text_pair_column") + (("prompt_template",) if data.get("prompt_template") else ())
            manifest["columns"] = {k: data.get(k) for k in keys}
            break
    manifest.setdefault("hash", config_hash(stage, config, manifest["parent"]))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def output_kind(folder: Path) -> str | None:
    """What deploykit wrote in `folder`: the stage its manifest names ("finetune", "baseline", "bench", ...),
    "run" for a `deploykit run` folder, "bench" for a report folder; None when deploykit did not write it."""
    mf = folder / MANIFEST
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads(mf.read_text()) if mf.is_file() else None
        if isinstance(manifest, dict) and isinstance(manifest.get("stage"), str) and "format" in manifest:
            return manifest["stage"]
    if (folder / RUN_STATE).is_file():
        return "run"
    if (folder / "baseline").is_dir() and output_kind(folder / "baseline") == "baseline":
        return "bench"  # a bench stopped after building its standard-recipe baseline, before the report
    with contextlib.suppress(OSError, ValueError):
        report = json.loads((folder / REPORT).read_text()) if (folder / REPORT).is_file() else None
        if isinstance(report, dict) and "rows" in report and "machine" in report:
            return "bench"
    return None


def _written_files(folder: Path) -> set[str] | None:
    """The top-level names `staging` recorded in the folder's manifest ("files"); None for an output
    without the list (written by older versions; run and report folders)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        files = json.loads((folder / MANIFEST).read_text()).get("files")
        if isinstance(files, list):
            return {str(f) for f in files}
    return None


def record_files(folder: Path) -> None:
    """Add the sorted names of `folder`'s top-level entries to its manifest.json ("files"), when it has one,
    so that `check_out_dir` can tell a user's file added later from what deploykit wrote."""
    mf = folder / MANIFEST
    if not mf.is_file():
        return
    manifest = json.loads(mf.read_text())
    if not isinstance(manifest, dict):
        return
    entries = [e for e in folder.iterdir() if not INNER_SCRATCH.match(e.name)]
    manifest["files"] = sorted(e.name for e in entries)
    # sizes, so that a later run can tell a file replaced since (changed_files) before reusing the output
    manifest["file_bytes"] = {e.name: e.stat().st_size for e in sorted(entries) if e.is_file() and e.name != MANIFEST}
    mf.write_text(json.dumps(manifest, indent=2, default=str))  # inside staging's temporary folder


def changed_files(folder: Path) -> list[str]:
    """The files `record_files` listed in `folder`'s manifest that are missing now or of another size; [] for an
    output written before sizes were recorded."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sizes = json.loads((folder / MANIFEST).read_text()).get("file_bytes") or {}
        return [name for name, size in sizes.items()
                if not (folder / name).is_file() or (folder / name).stat().st_size != size]
    return []


def _writable(folder: Path) -> bool:
    # os.access says yes to root everywhere, /proc included: only making something there tells (a read-only
    # mount, a pseudo file system), and the probe goes at once
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".deploykit-probe-", dir=folder))
    except OSError:
        return False
    return True


def check_out_dir(out: str | Path, stage: str | None = None, force: bool = False) -> Path:
    """Refuse an output folder deploykit may not write, before any work starts; returns it resolved.

    Accepted: a new folder (its nearest existing parent writable), an empty one (deploykit's own scratch
    folders ignored), or a deploykit output of the same `stage` ("run" for a run folder, "bench" for a
    report folder). `force` also accepts a deploykit output of another stage. Never accepted, `force`
    or not: a file or a path under one, the working directory or an ancestor of it, an unwritable place,
    a non-empty folder deploykit did not write, a folder inside a deploykit model output. `stage=None` (staging's last guard) accepts any
    deploykit output.

    Raises:
        UserError: one line naming the path, what is there and what to do instead.
    """
    given = out
    out = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        where = "the working directory" if out == cwd else f"an ancestor of the working directory ({cwd})"
        raise UserError(f"--out {given}: is {where}; deploykit replaces its output folder as a whole, "
                        "so give a new folder, e.g. --out runs/<name>")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {given}: {out} is a file, not a folder; give a new folder")
    # inside a model folder it would be a stray part of that model (run and report folders hold outputs by design)
    if owner := next(((a, k) for a in out.parents if (k := output_kind(a)) not in (None, "run", "bench")), None):
        raise UserError(f"--out {given}: is inside the deploykit {owner[1]} output {owner[0]}; give a folder outside it")
    existing = out if out.exists() else next(a for a in out.parents if a.exists())
    if not existing.is_dir():
        raise UserError(f"--out {given}: {existing} is a file, so nothing can be created under it; give another folder")
    # a stage renames the old output away and writes a sibling temporary folder: both need write access
    for folder in (out, out.parent) if existing == out else (existing,):
        if not _writable(folder):
            raise UserError(f"--out {given}: {folder} is not writable; give a folder you can write to")
    if existing != out:
        return out
    entries = sorted(e.name for e in out.iterdir() if not INNER_SCRATCH.match(e.name))
    if not entries:
        return out
    kind = output_kind(out)
    if kind is None:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"--out {given}: the folder holds files deploykit did not write ({shown}); deploykit only "
                        "replaces its own outputs, so give a new or empty folder")
    # an output whose manifest lists what deploykit wrote: anything else is the user's (notes added to a
    # copied output), and replacing the folder would delete it silently, so --force does not override this
    written = _written_files(out)
    foreign = [e for e in entries if written is not None and e not in written]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"--out {given}: the deploykit {kind} output holds files deploykit did not write ({shown}); "
                        "move them out or give another folder")
    if stage is None or kind == stage:
        return out
    if stage in ("run", "bench") or kind == "run":  # neither `deploykit run` nor `deploykit bench` has --force
        what = "a run folder" if stage == "run" else f"a {stage} {'output' if kind == 'run' else 'one'}"
        raise UserError(f"--out {given}: holds a deploykit {kind} {'folder' if kind == 'run' else 'output'}, "
                        f"not {what}; give a new or empty folder")
    if not force:
        raise UserError(f"--out {given}: holds a deploykit {kind} output, not a {stage} one; add --force to replace "
                        "it, or give another folder")
    return out


# work folders an interrupted stage leaves on purpose (training checkpoints) -> how to resume from them: the CLI
# names them in its last line instead of saying that every temporary folder was removed (deploykit/train/resume.py)
KEPT_FOR_RESUME: dict[Path, str] = {}


def kept_for_resume() -> str:
    """'; the checkpoints in X are kept ...' for each training stage's work folder a failed command leaves."""
    return "".join(f"; the checkpoints in {w} are {how} (remove the folder to free the space)"
                   for w, how in sorted(KEPT_FOR_RESUME.items()) if any(p.is_dir() for p in w.rglob("checkpoint-*")))


def work_dir(out_dir: str | Path, fresh: bool = True) -> Path:
    """A stage's scratch folder beside its output, `.<name>.work` (kept between runs, e.g. for --resume).

    `fresh` empties it first. Only a folder of that name is ever removed: the name is deploykit's own.
    """
    out = check_out_dir(out_dir)
    work = out.with_name(f".{out.name}.work")
    if work.exists() and not work.is_dir():
        raise UserError(f"{work}: a file where deploykit keeps its scratch folder; move it away")
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    return work


@contextlib.contextmanager
def scratch(folder: Path) -> Iterator[Path]:
    """A work folder (recovery checkpoints, the rewritten tokenizer) removed however the stage ends."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def scratch_in(staged: Path) -> Iterator[Path]:
    """A work folder inside a staging folder, for files that must not reach the output (float exports, calibration
    copies); removed when the block ends, before `staging` renames `staged` into place.

    Inside the staging folder rather than in /tmp: a process killed outright (SIGKILL, the OOM killer) leaves it in
    the stale `.<name>.tmp-<pid>` folder that the next run over the same output removes (`clear_stale`), where a
    /tmp folder stayed until reboot. Python's `tempfile` points into it meanwhile, so libraries' own temporary
    folders (onnxruntime.quantization's augmented calibration model) follow; not for threads that use `tempfile`
    meanwhile for something else.
    """
    work = staged / ".scratch"
    with scratch(work):
        work.mkdir()
        previous, tempfile.tempdir = tempfile.tempdir, str(work)
        try:
            yield work
        finally:
            tempfile.tempdir = previous


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clear_stale(out: Path) -> list[str]:
    """Remove what a killed (SIGKILL, power loss) stage left beside `out`: `.<name>.tmp-<pid>` and
    `.<name>.old-<pid>` folders of processes that no longer run. An `.old-` folder is the previous output,
    moved aside for the final rename: when `out` itself is missing it is put back instead. Folders of a
    live process (another run writing the same output) are left alone. Returns the names handled."""
    handled = []
    for kind in ("old", "tmp"):  # old first: it may become `out` again
        for stale in sorted(out.parent.glob(f".{glob_escape(out.name)}.{kind}-*")):
            pid = stale.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if kind == "old" and not out.exists():
                stale.rename(out)
            else:
                shutil.rmtree(stale, ignore_errors=True)
            handled.append(stale.name)
    return handled


@contextlib.contextmanager
def staging(out_dir: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `out_dir`, on failure it is removed.

    The temporary folder is removed on any exception, KeyboardInterrupt (SIGINT) and SIGTERM included
    (the CLI turns SIGTERM into `errors.Terminated`). `out_dir` must pass `check_out_dir` (any stage).
    """
    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        readable_as_umask(tmp)  # safetensors writes model.safetensors 0600: deployed, it is read by others
        record_files(tmp)  # the final set of names, for check_out_dir's next look at this folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:  # a signal between the two renames: put the previous output back
        if old.exists() and not out.exists():
            old.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
