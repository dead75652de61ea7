"""Tensor files: `torch.save` to memory, then an atomic write.

`torch.save` to a path records the file's name inside the archive; saving through a buffer keeps
files written from the same tensors byte-identical whatever their (temporary) names.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from tomrepro.core.atomic import write_bytes_atomic


def save_tensors(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(path, buffer.getvalue())
