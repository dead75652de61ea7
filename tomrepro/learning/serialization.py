"""Tensor files: `torch.save` to memory, then an atomic write; `load_tensors` reads them back.

`torch.save` to a path records the file's name inside the archive; saving through a buffer keeps
files written from the same tensors byte-identical whatever their (temporary) names. Loading is
`weights_only` (no pickled code runs) and every failure, including torch's multi-line messages and
warnings about foreign pickles, becomes one line naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from tomrepro.core.atomic import write_bytes_atomic
from tomrepro.core.errors import TomreproError


def save_tensors(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def load_tensors(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A `save_tensors` payload (a dict), or one `TomreproError` line saying `path` is not a
    tomrepro `what` (a checkpoint, a dynamics model, ...)."""
    path = Path(path)
    if not path.is_file():
        raise TomreproError(f"{path}: no such {what} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's messages span lines; what matters is the file is not ours
        raise TomreproError(
            f"{path}: not a tomrepro {what} (unsafe or foreign pickle content refused)"
        ) from None
    if not isinstance(payload, dict):
        raise TomreproError(f"{path}: not a tomrepro {what} (holds a {type(payload).__name__})")
    return payload
