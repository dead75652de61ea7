"""Replay-buffer HDF5 files, schema v2 (field by field in docs/buffer-format.md).

One self-contained file per run: the columns of `tomrepro.core.buffer.COLUMNS` as chunked,
byte-shuffled, compressed datasets at the root; policy snapshots as plain float tensors under
`/policy_snapshots/<version>`; provenance and versions as root attributes. Writes go through a
temporary file and a rename, so an existing file is never left half-written. The reader checks
everything it loads and turns any problem into one `BufferFormatError` line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import resource
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from itertools import pairwise
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xxhash

from tomrepro import __version__
from tomrepro.core.atomic import atomic_path
from tomrepro.core.buffer import (
    COLUMNS,
    FLOAT_COLUMNS,
    PROVENANCE_COLUMNS,
    ReplayBuffer,
    check_columns,
    check_provenance,
    check_structure,
)
from tomrepro.core.errors import BufferFormatError, TomreproError
from tomrepro.core.tasks import get_task

SCHEMA = "tomrepro.replay_buffer"
SCHEMA_VERSION = 3
# Every column's and snapshot tensor's bytes carry a digest that readers verify, so an overwritten
# byte range is refused instead of read as other valid data. Version 3 uses xxh3-64 (attribute
# `xxh3_64`; ~25 GB/s on this project's machines, 6x zlib's CRC-32, which made verified reads
# slower than 0.5x numpy.load); version 2 files carry CRC-32 (`crc32`) and stay verified with it;
# version 1 files (no digests) stay readable and are reported as unverified.
READABLE_VERSIONS = (1, 2, 3)
DIGESTS: dict[int, tuple[str, Callable[[memoryview], int]]] = {
    2: ("crc32", zlib.crc32),
    3: ("xxh3_64", xxhash.xxh3_64_intdigest),
}
CHECKSUM_ATTR = DIGESTS[SCHEMA_VERSION][0]
WRITE_OVERHEAD_BYTES = 1 << 20  # HDF5 metadata, attributes, chunk index: generous
SNAPSHOT_GROUP = "policy_snapshots"
CHUNK_BYTES = 1 << 20
PIECE_BYTES = 1 << 18  # read and checked at once: fits in L2 with room to spare
COMPRESSIONS = ("lzf", "gzip", None)
_VOLATILE_ATTRS = frozenset({"created_at"})
_VERSIONED_PACKAGES = ("gymnasium", "mujoco", "torch", "numpy", "h5py")


@dataclass(frozen=True)
class PolicySnapshot:
    """Parameters of the policy that was current from `env_step` on, as named float tensors."""

    version: int
    env_step: int
    tensors: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class BufferMetadata:
    """Root attributes of a buffer file; library versions and time are filled in on write."""

    task_id: str
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    policy_versions_recorded: bool = True
    complete: bool = True
    created_at: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION  # 1: written without checksums (read unverified)


@dataclass(frozen=True)
class BufferFile:
    """What `read_buffer` returns: the data, its metadata and the snapshot index."""

    path: Path
    buffer: ReplayBuffer
    metadata: BufferMetadata
    snapshot_steps: Mapping[int, int]  # policy version -> env step it became current

    def snapshot_step(self, version: int) -> int:
        """Env step at which snapshot `version` became current; a missing one is a user error."""
        if version not in self.snapshot_steps:
            have = ", ".join(map(str, sorted(self.snapshot_steps))) or "none"
            raise BufferFormatError(
                f"{self.path}: no policy snapshot {version} (snapshots: {have})"
            )
        return self.snapshot_steps[version]


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _created_at() -> str:
    # SOURCE_DATE_EPOCH makes byte-identical files possible for reproducible builds.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = _dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch else _dt.datetime.now(_dt.UTC)
    return when.isoformat(timespec="seconds")


def write_buffer(
    path: str | os.PathLike[str],
    buffer: ReplayBuffer,
    meta: BufferMetadata,
    snapshots: Iterable[PolicySnapshot] = (),
    *,
    compression: str | None = None,
) -> Path:
    """Check `buffer` and write it atomically; an existing file at `path` survives any failure.

    Columns are always chunked. `compression` ("lzf" or "gzip", with byte shuffle) shrinks a
    Hopper buffer by about 30% but makes reading it 4-20x slower, because HDF5 runs filters on
    one thread; the default leaves data uncompressed (benchmarks/buffer_io.py prints the figures).
    """
    if compression not in COMPRESSIONS:
        raise TomreproError(f"unknown compression {compression!r}; choose from lzf, gzip, none")
    path = Path(path)
    columns = buffer.columns()
    n, obs_dim, act_dim = check_columns(columns)
    task = get_task(meta.task_id)
    if obs_dim != task.obs_dim or act_dim != task.act_dim:
        raise BufferFormatError(
            f"buffer dims (obs {obs_dim}, act {act_dim}) do not match task {task.task_id} "
            f"(obs {task.obs_dim}, act {task.act_dim})"
        )
    snapshots = sorted(snapshots, key=lambda s: s.version)
    _check_snapshots({s.version: s.env_step for s in snapshots})
    attrs: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "task_id": task.task_id,
        "env_id": task.env_id,
        "task_kwargs": json.dumps(dict(task.env_kwargs), sort_keys=True),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "num_transitions": n,
        "seed": int(meta.seed),
        "config": json.dumps(meta.config, sort_keys=True),
        "policy_versions_recorded": bool(meta.policy_versions_recorded),
        "complete": bool(meta.complete),
        "created_at": meta.created_at or _created_at(),
        "tomrepro_version": __version__,
    }
    attrs.update({f"{p}_version": _package_version(p) for p in _VERSIONED_PACKAGES})
    snapshots = list(snapshots)
    data_bytes = sum(c.nbytes for c in columns.values()) + sum(
        np.asarray(t).nbytes for snap in snapshots for t in snap.tensors.values()
    )
    check_room_for(path, data_bytes + WRITE_OVERHEAD_BYTES)
    with atomic_path(path) as tmp:
        try:
            with h5py.File(tmp, "w", track_order=True) as f:
                f.attrs.update(attrs)
                for spec in COLUMNS:
                    _write_column(f, spec.name, columns[spec.name], compression)
                group = f.create_group(SNAPSHOT_GROUP, track_order=True)
                for snap in snapshots:
                    _write_snapshot(group, snap)
        except (OSError, ValueError, TypeError) as exc:
            raise TomreproError(f"cannot write {path}: {exc}") from None
    return path


def _write_column(f: h5py.File, name: str, data: np.ndarray, compression: str | None) -> None:
    row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
    rows = int(max(1, min(len(data), CHUNK_BYTES // row_bytes)))
    ds = f.create_dataset(
        name,
        data=data,
        chunks=(rows, *data.shape[1:]) if len(data) else None,
        shuffle=compression is not None and len(data) > 0,
        compression=compression if len(data) else None,
        track_times=False,
    )
    ds.attrs[CHECKSUM_ATTR] = checksum(data)


def check_room_for(path: Path, size: int) -> None:
    """Refuse, in one line, a write that cannot fit: libhdf5 can crash the process when a write
    fails part-way (a full disk, a file-size limit), so the room is checked before writing."""
    parent = path.parent if str(path.parent) else Path(".")
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and size > limit:
        raise TomreproError(
            f"cannot write {path}: about {size / 2**20:.1f} MiB needed, beyond this process's "
            f"file-size limit ({limit / 2**20:.1f} MiB): file too large"
        )
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if size > free:
        raise TomreproError(
            f"cannot write {path}: about {size / 2**20:.1f} MiB needed, "
            f"{free / 2**20:.1f} MiB free on its disk"
        )


def checksum(data: np.ndarray, version: int = SCHEMA_VERSION) -> int:
    """The schema's digest of an array's bytes in C order (zlib and xxhash release the GIL on
    large buffers, so the reader verifies columns on its worker thread while it reads on)."""
    arr = np.ascontiguousarray(data)
    return DIGESTS[version][1](arr.data.cast("B")) if arr.size else 0


def _stored_checksum(ds: h5py.Dataset, what: str, version: int) -> int:
    attr = DIGESTS[version][0]
    if attr not in ds.attrs:
        raise BufferFormatError(f"{what} has no {attr} attribute")
    stored = _integer(ds.attrs[attr])
    if stored is None:
        raise BufferFormatError(f"{what} has a malformed {attr} attribute")
    return stored


def _integer(value: Any) -> int | None:
    """An attribute stored as an integer, or None: int() would truncate a retyped 1.5 to 1."""
    if isinstance(value, np.integer | int) and not isinstance(value, bool | np.bool_):
        return int(value)
    return None


def _verify(expected: int, data: np.ndarray, what: str, version: int) -> None:
    if checksum(data, version) != expected:
        raise BufferFormatError(f"{what} fails its checksum (the file was altered or damaged)")


def _write_snapshot(group: h5py.Group, snap: PolicySnapshot) -> None:
    g = group.create_group(f"{snap.version:06d}", track_order=True)
    g.attrs["version"] = int(snap.version)
    g.attrs["env_step"] = int(snap.env_step)
    for key, tensor in snap.tensors.items():
        arr = np.ascontiguousarray(tensor)
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise BufferFormatError(
                f"snapshot {snap.version} tensor {key!r} must be finite floating point"
            )
        ds = g.create_dataset(key, data=arr, track_times=False)
        ds.attrs[CHECKSUM_ATTR] = checksum(arr)


def _check_snapshots(steps: Mapping[int, int]) -> None:
    versions = sorted(steps)
    if any(v < 0 for v in versions):
        raise BufferFormatError("policy snapshot versions must be non-negative")
    if any(steps[a] >= steps[b] for a, b in pairwise(versions)):
        raise BufferFormatError("policy snapshots must start at increasing env steps")


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    """The file, open for reading; whatever libhdf5 or h5py raise about a damaged file while it
    is read (KeyError, OSError, RuntimeError, ...) becomes one `BufferFormatError` line."""
    if not path.exists():
        raise BufferFormatError(f"{path}: no such file")
    if path.is_dir():
        raise BufferFormatError(f"{path}: is a directory, not a buffer file")
    if not h5py.is_hdf5(path):
        raise BufferFormatError(f"{path}: not an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise BufferFormatError(
            f"{path}: unreadable HDF5 file (truncated or corrupt?): {_first_line(exc)}"
        ) from None
    try:
        with f:
            yield f
    except TomreproError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BufferFormatError(
            f"{path}: unreadable HDF5 content (corrupt file?): {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"")
    return text.splitlines()[0] if text else type(exc).__name__


def _attr(f: h5py.File, path: Path, name: str, kind: type) -> Any:
    if name not in f.attrs:
        raise BufferFormatError(f"{path}: missing root attribute {name!r}")
    value = f.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    if (
        kind is int
        and isinstance(value, np.integer | int)
        and not isinstance(value, bool | np.bool_)
    ):
        return int(value)
    if kind is bool and isinstance(value, np.bool_ | bool):
        return bool(value)
    if kind is str and isinstance(value, str):
        return value
    raise BufferFormatError(f"{path}: root attribute {name!r} must be {kind.__name__}")


def read_metadata(
    path: str | os.PathLike[str], *, allow_incomplete: bool = False
) -> BufferMetadata:
    """Root attributes only: cheap, for `inspect` and for stages deciding whether to redo work."""
    path = Path(path)
    with _open(path) as f:
        return _read_metadata(f, path, allow_incomplete)


def _read_metadata(f: h5py.File, path: Path, allow_incomplete: bool) -> BufferMetadata:
    schema = f.attrs.get("schema")
    if isinstance(schema, bytes):
        schema = schema.decode()
    if schema != SCHEMA:
        raise BufferFormatError(
            f"{path}: not a tomrepro replay buffer (schema attribute {schema!r})"
        )
    version = _attr(f, path, "schema_version", int)
    if version not in READABLE_VERSIONS:
        raise BufferFormatError(
            f"{path}: unsupported schema version {version} (this tomrepro reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    task_id = _attr(f, path, "task_id", str)
    try:
        task = get_task(task_id)
    except TomreproError as exc:
        raise BufferFormatError(f"{path}: {exc}") from None
    env_id = _attr(f, path, "env_id", str)
    if env_id != task.env_id:
        raise BufferFormatError(
            f"{path}: env_id {env_id!r} is not task {task_id}'s {task.env_id!r}"
        )
    complete = _attr(f, path, "complete", bool)
    if not complete and not allow_incomplete:
        raise BufferFormatError(f"{path}: marked incomplete (the run that wrote it did not finish)")
    try:
        config = json.loads(_attr(f, path, "config", str))
    except json.JSONDecodeError:
        raise BufferFormatError(f"{path}: root attribute 'config' is not JSON") from None
    return BufferMetadata(
        task_id=task_id,
        seed=_attr(f, path, "seed", int),
        config=config,
        policy_versions_recorded=_attr(f, path, "policy_versions_recorded", bool),
        complete=complete,
        created_at=_attr(f, path, "created_at", str),
        versions={
            p: _attr(f, path, f"{p}_version", str) for p in (*_VERSIONED_PACKAGES, "tomrepro")
        },
        schema_version=version,
    )


def read_buffer(
    path: str | os.PathLike[str],
    *,
    allow_incomplete: bool = False,
    deep: bool = False,
    verify: bool = True,
) -> BufferFile:
    """Load and check a buffer file; any violation is one `BufferFormatError` line.

    Every column's checksum is verified (schema 2; `verify=False` skips it for huge files).
    `deep` adds the cross-row observation continuity check (see `check_columns`) and checks
    every policy snapshot's tensors (`read_snapshot` checks one when it is read).
    """
    path = Path(path)
    with _open(path) as f:
        meta = _read_metadata(f, path, allow_incomplete)
        n = _attr(f, path, "num_transitions", int)
        attr_dims = {name: _attr(f, path, name, int) for name in ("obs_dim", "act_dim")}
        checked = meta.schema_version if verify and meta.schema_version in DIGESTS else None
        columns = _read_and_scan_columns(f, path, checked)
        steps = _read_snapshot_index(f, path)
    try:
        _, obs_dim, act_dim = check_structure(columns, deep=deep, provenance=False)
    except BufferFormatError as exc:
        raise BufferFormatError(f"{path}: {exc}") from None
    task = get_task(meta.task_id)
    if len(columns["rewards"]) != n:
        raise BufferFormatError(
            f"{path}: num_transitions says {n} rows, columns hold {len(columns['rewards'])}"
        )
    if (obs_dim, act_dim) != (task.obs_dim, task.act_dim):
        raise BufferFormatError(
            f"{path}: dims (obs {obs_dim}, act {act_dim}) do not match task {task.task_id} "
            f"(obs {task.obs_dim}, act {task.act_dim})"
        )
    if (attr_dims["obs_dim"], attr_dims["act_dim"]) != (obs_dim, act_dim):
        raise BufferFormatError(f"{path}: obs_dim/act_dim attributes disagree with the columns")
    if deep:  # every snapshot's tensors against the actor's architecture
        for version in steps:
            read_snapshot(path, version, verify=verify)
    return BufferFile(path, ReplayBuffer.from_columns(columns, check=False), meta, steps)


def _read_and_scan_columns(f: h5py.File, path: Path, verify: int | None) -> dict[str, np.ndarray]:
    """Read every column, checking each piece while its bytes are still in the CPU cache.

    h5py calls (layout, attributes) stay on this thread; the plain reads (`preadv`) and the
    per-piece digests and finiteness checks release the GIL and run on two worker threads, one
    column each. The provenance columns' order and episode checks run here meanwhile.
    """
    fd = os.open(path, os.O_RDONLY)
    columns: dict[str, np.ndarray] = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs: dict[str, tuple[_ColumnScan, int | None, Future[None] | None]] = {}
            # Largest first, so that the two big observation columns go to different workers.
            names = [*PROVENANCE_COLUMNS, *FLOAT_COLUMNS]
            datasets = {name: _column_dataset(f, path, name) for name in names}
            for name in sorted(names, key=lambda k: -datasets[k].size * datasets[k].dtype.itemsize):
                ds = datasets[name]
                stored = None
                if verify is not None:
                    stored = _stored_checksum(ds, f"{path}: column {name!r}", verify)
                scan = _ColumnScan(name, verify, finite=name in FLOAT_COLUMNS)
                out = columns[name] = np.empty(ds.shape, dtype=ds.dtype)
                runs = _raw_runs(ds, out, path) if out.size else []
                job = None
                if runs is None:  # compressed or unusual layout: h5py reads it
                    _h5py_read(ds, out, path, name)
                    scan.update(out)
                elif runs:  # none for an empty column (a run checkpointed before its first step)
                    job = pool.submit(_read_runs, fd, out, runs, scan, path, name)
                jobs[name] = (scan, stored, job)
            for name in names:
                scan, stored, job = jobs[name]
                if job is not None:
                    job.result()
                try:
                    scan.finish(stored, f"column {name!r}")
                    if name == PROVENANCE_COLUMNS[-1]:
                        check_provenance({k: columns[k] for k in PROVENANCE_COLUMNS})
                except BufferFormatError as exc:
                    raise BufferFormatError(f"{path}: {exc}") from None
    finally:
        os.close(fd)
    return columns


class _ColumnScan:
    """A column's running digest (schema `verify`) and finiteness check, fed piece by piece."""

    def __init__(self, name: str, verify: int | None, *, finite: bool) -> None:
        self.name, self.verify, self.finite = name, verify, finite
        self._xxh3 = xxhash.xxh3_64() if verify == 3 else None
        self._crc = 0
        self._all_finite = True
        self._empty = True  # `checksum` gives an empty column 0, whatever the digest

    def update(self, piece: np.ndarray) -> None:
        self._empty = self._empty and piece.size == 0
        if self.verify == 3:
            assert self._xxh3 is not None
            self._xxh3.update(piece.reshape(-1).view(np.uint8).data)
        elif self.verify == 2:
            self._crc = zlib.crc32(piece.reshape(-1).view(np.uint8).data, self._crc)
        # A finite sum of squares proves every term finite (NaN and inf propagate); a non-finite
        # one may be overflow of large finite values, so only then is the exact test run.
        if self.finite and self._all_finite:
            flat = piece.reshape(-1)
            with np.errstate(over="ignore", invalid="ignore"):
                square_sum = np.dot(flat, flat)
            if not np.isfinite(square_sum):
                self._all_finite = bool(np.isfinite(flat).all())

    def finish(self, stored: int | None, what: str) -> None:
        if not self._all_finite:
            raise BufferFormatError(f"column {self.name} contains NaN or inf")
        if stored is None:
            return
        digest = self._xxh3.intdigest() if self._xxh3 is not None else self._crc
        if self._empty:
            digest = 0
        if digest != stored:
            raise BufferFormatError(f"{what} fails its checksum (the file was altered or damaged)")


def _column_dataset(f: h5py.File, path: Path, name: str) -> h5py.Dataset:
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise BufferFormatError(f"{path}: missing column {name!r}")
    spec = next(c for c in COLUMNS if c.name == name)
    rank = 1 if spec.width == "scalar" else 2
    if ds.dtype != spec.dtype or len(ds.shape) != rank:
        raise BufferFormatError(
            f"{path}: column {name} has dtype {ds.dtype} and shape {ds.shape}, expected "
            f"{np.dtype(spec.dtype)} with {rank} dimension(s)"
        )
    return ds


def _unreadable(path: Path, name: str, exc: BaseException) -> BufferFormatError:
    return BufferFormatError(f"{path}: column {name!r} is unreadable (truncated file?): {exc}")


def _h5py_read(ds: h5py.Dataset, out: np.ndarray, path: Path, name: str) -> None:
    try:
        ds.read_direct(out)
    except (OSError, ValueError, TypeError) as exc:
        raise _unreadable(path, name, exc) from None


def _raw_runs(ds: h5py.Dataset, out: np.ndarray, path: Path) -> list[tuple[int, int, int]] | None:
    """Where an unfiltered, row-chunked column's rows lie in the file: (first row, file offset,
    rows) per run of back-to-back chunks, or None for compressed or unusual layouts.

    HDF5's chunk machinery halves read throughput for plain data; the file offsets of raw chunks
    are public (`get_chunk_info`), so reading them directly is as fast as `numpy.load`.
    """
    if ds.compression or ds.shuffle or ds.fletcher32 or ds.scaleoffset is not None:
        return None
    if ds.chunks is None or ds.chunks[1:] != ds.shape[1:] or not out.flags.c_contiguous:
        return None
    if ds.dtype.byteorder == ">":
        return None
    name = ds.name.lstrip("/")
    row_bytes = out.nbytes // len(out)
    try:
        infos = sorted(
            (ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())),
            key=lambda info: info.chunk_offset[0],
        )
    except (OSError, ValueError, TypeError) as exc:
        raise _unreadable(path, name, exc) from None
    runs: list[tuple[int, int, int]] = []
    for info in infos:
        first = info.chunk_offset[0]
        rows = min(ds.chunks[0], len(out) - first)
        if runs and (first, info.byte_offset) == (
            runs[-1][0] + runs[-1][2],
            runs[-1][1] + runs[-1][2] * row_bytes,
        ):
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + rows)
        else:
            runs.append((first, info.byte_offset, rows))
    tiled = bool(runs) and runs[0][0] == 0 and runs[-1][0] + runs[-1][2] == len(out)
    if not tiled or any(a[0] + a[2] != b[0] or a[2] <= 0 for a, b in pairwise(runs)):
        raise _unreadable(path, name, OSError("its chunks do not tile the column"))
    return runs


def _read_runs(
    fd: int,
    out: np.ndarray,
    runs: list[tuple[int, int, int]],
    scan: _ColumnScan,
    path: Path,
    name: str,
) -> None:
    """Read the runs piece by piece in row order, handing each piece to `scan` as it lands."""
    row_bytes = out.nbytes // len(out)
    piece_rows = max(1, PIECE_BYTES // row_bytes)
    try:
        for first, offset, rows in runs:
            for start in range(first, first + rows, piece_rows):
                piece = out[start : min(start + piece_rows, first + rows)]
                at = offset + (start - first) * row_bytes
                _pread_exact(fd, piece.reshape(-1).view(np.uint8), at)
                scan.update(piece)
    except OSError as exc:
        raise _unreadable(path, name, exc) from None


def _pread_exact(fd: int, dest: np.ndarray, offset: int) -> None:
    done = 0
    while done < dest.nbytes:
        got = os.preadv(fd, [dest[done:].data], offset + done)
        if got <= 0:
            raise OSError("file ends inside a column")
        done += got


def _read_snapshot_index(f: h5py.File, path: Path) -> dict[int, int]:
    group = f.get(SNAPSHOT_GROUP)
    if not isinstance(group, h5py.Group):
        raise BufferFormatError(f"{path}: missing group {SNAPSHOT_GROUP!r}")
    steps = {}
    for key, g in group.items():
        if not isinstance(g, h5py.Group):  # h5py gives None for a link it cannot resolve
            raise BufferFormatError(f"{path}: snapshot entry {key!r} is not a readable group")
        version, env_step = (_integer(g.attrs.get(k)) for k in ("version", "env_step"))
        if version is None or env_step is None:
            raise BufferFormatError(f"{path}: snapshot {key!r} lacks integer version/env_step")
        if key != f"{version:06d}":
            raise BufferFormatError(f"{path}: snapshot {key!r} says version {version}")
        steps[version] = env_step
    try:
        _check_snapshots(steps)
    except BufferFormatError as exc:
        raise BufferFormatError(f"{path}: {exc}") from None
    return steps


def check_actor_tensors(tensors: Mapping[str, np.ndarray], obs_dim: int, act_dim: int) -> None:
    """A policy snapshot must be the SAC actor of this task: tensors `net.layers.i.weight`
    (1, in, out) and `net.layers.i.bias` (1, 1, out) chained from obs_dim to 2 * act_dim
    (mean and log-std), and `action_scale`, `action_bias` (act_dim,); all finite float32.
    Raises ValueError naming the first tensor that is not."""
    layers = sum(1 for k in tensors if k.startswith("net.layers.") and k.endswith(".weight"))
    expected = {f"net.layers.{i}.{p}" for i in range(layers) for p in ("weight", "bias")}
    expected |= {"action_scale", "action_bias"}
    if layers == 0 or set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        what = f"unexpected tensor {extra[0]!r}" if extra else f"missing tensor {missing[0]!r}"
        raise ValueError(f"not a SAC actor snapshot: {what}")
    width = obs_dim
    for i in range(layers):
        out = 2 * act_dim if i == layers - 1 else None
        for part, shape in (("weight", (1, width, out)), ("bias", (1, 1, out))):
            name, arr = f"net.layers.{i}.{part}", tensors[f"net.layers.{i}.{part}"]
            want = tuple(arr.shape[2] if d is None and arr.ndim == 3 else d for d in shape)
            if arr.shape != want:
                raise ValueError(f"tensor {name!r} has shape {arr.shape}, expected {want}")
        width = tensors[f"net.layers.{i}.weight"].shape[2]
        if tensors[f"net.layers.{i}.bias"].shape[2] != width:
            raise ValueError(f"tensor 'net.layers.{i}.bias' does not match its weight's width")
    for name in ("action_scale", "action_bias"):
        if tensors[name].shape != (act_dim,):
            raise ValueError(
                f"tensor {name!r} has shape {tensors[name].shape}, expected ({act_dim},)"
            )
    for name, arr in tensors.items():
        if arr.dtype != np.float32 or not np.isfinite(arr).all():
            raise ValueError(f"tensor {name!r} is not finite float32")


def read_snapshot(
    path: str | os.PathLike[str], version: int, *, verify: bool = True
) -> PolicySnapshot:
    """Load one policy snapshot's tensors (snapshots are read on demand, not with the buffer),
    checked against the file's sizes and the actor's architecture, and (schema 2) against
    their checksums."""
    path = Path(path)
    with _open(path) as f:
        schema = _attr(f, path, "schema_version", int)
        verify = verify and schema in DIGESTS
        group = f.get(f"{SNAPSHOT_GROUP}/{version:06d}")
        if not isinstance(group, h5py.Group):
            raise BufferFormatError(f"{path}: no policy snapshot for version {version}")
        dims = []
        for name in ("observations", "actions"):
            column = f.get(name)
            if not isinstance(column, h5py.Dataset) or column.ndim != 2:
                raise BufferFormatError(f"{path}: column {name!r} is missing or not 2-D")
            dims.append(int(column.shape[1]))
        tensors = {}
        for key, ds in group.items():
            if not isinstance(ds, h5py.Dataset):
                raise BufferFormatError(f"{path}: snapshot {version} entry {key!r} is not a tensor")
            tensors[key] = ds[()]
            if verify:
                what = f"{path}: snapshot {version} tensor {key!r}"
                _verify(_stored_checksum(ds, what, schema), tensors[key], what, schema)
        try:
            check_actor_tensors(tensors, *dims)
        except ValueError as exc:
            raise BufferFormatError(f"{path}: snapshot {version}: {exc}") from None
        env_step = _integer(group.attrs.get("env_step"))
        if env_step is None:
            raise BufferFormatError(f"{path}: snapshot {version} lacks an integer env_step")
        return PolicySnapshot(version, env_step, tensors)


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 over every dataset and attribute except the creation time.

    Two runs with the same seed and config give the same digest even though their files were
    written at different times; later stages record it to name the exact data they used.
    """
    path = Path(path)
    h = hashlib.sha256()

    def visit_attrs(name: str, obj: h5py.HLObject) -> None:
        for key in sorted(obj.attrs):
            if name == "/" and key in _VOLATILE_ATTRS:
                continue
            h.update(f"{name}@{key}={obj.attrs[key]!r}".encode())

    with _open(path) as f:
        visit_attrs("/", f)

        def visit(name: str, obj: h5py.HLObject) -> None:
            visit_attrs(name, obj)
            if isinstance(obj, h5py.Dataset):
                h.update(f"{name}:{obj.dtype.str}:{obj.shape}".encode())
                h.update(np.ascontiguousarray(obj[()]).tobytes())

        f.visititems(visit)
    return h.hexdigest()
