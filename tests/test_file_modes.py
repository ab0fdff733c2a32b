import os
import stat

import pytest

from deploykit.artifact import staging, write_manifest
from deploykit.file_modes import current_umask, readable_as_umask


@pytest.fixture
def umask():
    """Set the process umask for a test, and put the previous one back."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_gets_the_read_bits_the_umask_allows_and_nothing_else(tmp_path, umask):
    umask(0o027)
    (tmp_path / "sub").mkdir()
    private, script, link = tmp_path / "sub" / "model.safetensors", tmp_path / "run.sh", tmp_path / "link"
    private.write_bytes(b"x")
    private.chmod(0o600)
    script.write_bytes(b"x")
    script.chmod(0o750)
    link.symlink_to(private)
    assert current_umask() == 0o027
    assert readable_as_umask(tmp_path) == ["sub/model.safetensors"]  # the link and the group-readable script: not
    assert mode(private) == 0o640  # group read (umask 027 keeps others out), no write or execute bit added
    assert mode(script) == 0o750


def test_a_private_umask_keeps_files_private(tmp_path, umask):
    umask(0o077)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "model.safetensors").chmod(0o600)
    assert readable_as_umask(tmp_path) == []
    assert mode(tmp_path / "model.safetensors") == 0o600


def test_a_stage_output_saved_by_safetensors_is_readable_by_others(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    umask(0o022)
    out = tmp_path / "out"
    with staging(out) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        write_manifest(tmp, stage="prune", format="pytorch", parent=None, config={})
    assert mode(out / "model.safetensors") == 0o644
    assert mode(out / "manifest.json") == 0o644
