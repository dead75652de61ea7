"""Wall time of one pipeline stage, written by `tomrepro --time-log F` for the report."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from tomrepro.core.atomic import atomic_path, make_parent


def write_stage_time(path: Path, command: str | None, started: float) -> None:
    """Record how long `command` took; only successful commands call this."""
    record = {
        "command": command,
        "wall_seconds": round(time.time() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    make_parent(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def read_stage_times(folder: Path) -> dict[str, dict]:
    """Every stage's record under `folder`, keyed by file stem (the stage name)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
