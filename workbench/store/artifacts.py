"""Artifact files live under $WORKBENCH_HOME/runs/<run id>/; no name can point outside it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path, PurePosixPath


class UnsafeArtifactName(ValueError):
    pass


def run_dir(home: Path, run_id: int) -> Path:
    return Path(home) / "runs" / str(int(run_id))


def artifact_path(home: Path, run_id: int, name: str) -> Path:
    """The file for artifact `name` of a run, refusing absolute names, '..', and symlink escapes."""
    pure = PurePosixPath(name)
    if not name or "\\" in name or "\x00" in name or any(p in ("", "..", ".") for p in name.split("/")):
        raise UnsafeArtifactName(f"artifact name {name!r} must be a relative path without '..'")
    root = run_dir(home, run_id)
    path = root.joinpath(*pure.parts)
    # Resolve symlinks in whatever part of the path already exists.
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafeArtifactName(f"artifact name {name!r} escapes the run directory")
    return path


def relative_to_home(home: Path, path: Path) -> str:
    return Path(os.path.relpath(path, home)).as_posix()


def write_temporary(path: Path, data: bytes) -> Path:
    """`data` in a synced temporary file beside `path` (its folder made), for `place` to move into place.
    A full or read-only disk leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")  # one per writer
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def place(tmp: Path, path: Path) -> None:
    """Rename the temporary file onto `path` and sync the folder, so the rename itself survives a crash."""
    os.replace(tmp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
