"""One run lifecycle for every stage that writes a directory (collect, MBPO, offline study).

A run directory holds `config.json`, the fingerprint of everything that decides its results,
written before any other output. From it and the stage's own "finished" test, `prepare` decides:
- `done`: same config and finished (unless `rerun_complete`): nothing to do;
- `resume`: same config, not finished: the stage continues from what is there;
- `fresh`: empty directory, or `rerun_complete`, or another config with `overwrite`: the
  stage's outputs are removed and it starts over.
Output of another config (or output with no readable fingerprint) is refused without
`overwrite`, so nothing a user made is destroyed by a typo in a profile.

`lock()` keeps two commands from writing one directory at once: a lock file holding the
holder's pid and host, created exclusively and removed on exit. A holder on this host that is
no longer alive (killed) is taken over; one on another host cannot be checked, so it is refused
unless `break_lock`. (filelock's OS locks vanish with their process too, but cannot name the
holder or tell a live remote one from a dead one.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tomrepro.core.atomic import atomic_path
from tomrepro.core.errors import TomreproError

FINGERPRINT = "config.json"
LOCK = ".tomrepro.lock"


class Start(StrEnum):
    DONE = "done"
    RESUME = "resume"
    FRESH = "fresh"


def canonical(config: dict[str, Any]) -> str:
    """The comparable text of a config (JSON, sorted keys)."""
    return json.dumps(config, sort_keys=True, indent=1)


@dataclass
class RunDirectory:
    """A stage's output directory: `outputs` are the names under it that the stage writes and a
    fresh start removes; `precious` those of them that, without a matching fingerprint, are
    somebody's work (left-over checkpoints alone are not)."""

    root: Path
    config: dict[str, Any]
    what: str  # "collection", "MBPO run", ... for messages
    outputs: tuple[str, ...]
    precious: tuple[str, ...]
    finished: Callable[[], bool]  # may raise TomreproError when its files are unreadable

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT

    def stored(self) -> str | None:
        try:
            return self.fingerprint.read_text()
        except OSError:
            return None

    def same_config(self) -> bool:
        return self.stored() == canonical(self.config)

    def is_done(self) -> bool:
        """Finished with this exact config (what a sweep checks before scheduling a run)."""
        try:
            return self.same_config() and self.finished()
        except TomreproError:
            return False

    def prepare(self, *, overwrite: bool = False, rerun_complete: bool = False) -> Start:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TomreproError(f"cannot create output directory {self.root}: {exc}") from None
        stored = self.stored()
        has_output = any((self.root / name).exists() for name in self.precious)
        if stored == canonical(self.config):
            try:
                finished = self.finished()
            except TomreproError:
                finished = None  # unreadable output of this config: only --overwrite replaces it
            if finished is not None:
                if not finished:
                    return Start.RESUME
                if not rerun_complete:
                    return Start.DONE
                return self.start_fresh()
        elif stored is None and not has_output:
            return self.start_fresh()
        if not overwrite:
            if stored is None:
                self.finished()  # an unreadable file says so in its own words
            held = (
                f"unreadable output of a {self.what}"
                if stored == canonical(self.config)
                else f"a {self.what} with a different config"
                if stored is not None
                else f"output without a {FINGERPRINT} (not this {self.what}'s)"
            )
            raise TomreproError(
                f"{self.root} holds {held}; choose another --out or pass --overwrite"
            )
        return self.start_fresh()

    @contextmanager
    def lock(self, *, break_lock: bool = False) -> Iterator[None]:
        """Hold the directory for the duration of the block (see the module docstring)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TomreproError(f"cannot create output directory {self.root}: {exc}") from None
        path = self.root / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        unreadable = 0
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(path)
                if holder is None and unreadable < 20:  # its holder may be writing it now
                    unreadable += 1
                    time.sleep(0.05)
                    continue
                if holder is None or _gone(holder, str(me["host"])) or break_lock:
                    path.unlink(missing_ok=True)  # dead, unreadable or broken on request
                    continue
                raise TomreproError(
                    f"{self.root} is in use by pid {holder.get('pid')} on host "
                    f"{holder.get('host')} (lock file {path}); wait for it to finish, or pass "
                    "--break-lock if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        try:
            yield
        finally:
            if (_read_holder(path) or {}).get("pid") == me["pid"]:
                path.unlink(missing_ok=True)

    def start_fresh(self) -> Start:
        """Remove the stage's outputs, then write the fingerprint first."""
        for name in (*self.outputs, FINGERPRINT):
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        with atomic_path(self.fingerprint) as tmp:
            tmp.write_text(canonical(self.config))
        return Start.FRESH


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _gone(holder: dict[str, Any], host: str) -> bool:
    """A holder on this host whose process no longer exists."""
    if holder.get("host") != host:
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False
