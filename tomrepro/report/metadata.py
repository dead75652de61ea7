"""Run metadata for the report: versions, git revision, device, stage wall times."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "tomrepro",
    "torch",
    "gymnasium",
    "mujoco",
    "numpy",
    "scipy",
    "h5py",
    "xarray",
    "pandas",
    "seaborn",
    "dvc",
    "ray",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(root: Path) -> str:
    """HEAD's hash, `+dirty` when tracked files differ; `unknown` outside a git work tree."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def device_description(setting: str) -> str:
    """What `--device auto|cpu|cuda` meant on this machine."""
    import torch

    cpu = _cpu_model()
    if setting != "cpu" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} (setting `{setting}`; CPU {cpu})"
    return f"cpu: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
