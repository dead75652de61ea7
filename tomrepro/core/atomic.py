"""Atomic file replacement: an output either appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tomrepro.core.errors import TomreproError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the target's directory so that the final `os.replace` is a
    same-filesystem rename, which POSIX makes atomic. On any exception the temporary file is
    removed and an existing `target` is left exactly as it was.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise TomreproError(f"cannot write {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise TomreproError(f"cannot write {target}: directory {parent} is not writable")
    tmp = parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:  # a full disk, a file-size limit, a vanished directory
            raise TomreproError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def make_parent(target: str | os.PathLike[str]) -> None:
    """Create the directory an output goes into; failure is a one-line user error."""
    parent = Path(target).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TomreproError(f"cannot create directory {parent} for {target}: {exc}") from None
