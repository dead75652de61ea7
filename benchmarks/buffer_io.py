"""Write/read throughput of a 1M-transition Hopper-sized buffer file beside numpy.save/load.

Run: `python benchmarks/buffer_io.py [--rows 1000000] [--repeats 5]`. The data is real Hopper-v5
random-policy experience (a 50k-step rollout tiled with fresh episode ids), so compression sees
realistic floats. Figures are MB/s of raw column bytes; the ratio to numpy is the headline.
Reads are timed with the checksums verified (schema 3's xxh3-64 per column, the default) and
skipped (`verify=False`), so the table shows what verification costs; issue 18's bar is a
verified read of the default layout at >= 0.5x `numpy.load`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import BufferMetadata, checksum, read_buffer, write_buffer
from tomrepro.core.tasks import get_task
from tomrepro.loops.rollout import random_rollout


def tiled_hopper_buffer(rows: int, base_rows: int = 50_000) -> ReplayBuffer:
    base = random_rollout(get_task("Hopper-v5"), base_rows, seed=0).columns()
    reps = -(-rows // base_rows)
    cols = {k: np.concatenate([v] * reps)[:rows] for k, v in base.items()}
    tile = np.repeat(np.arange(reps, dtype=np.int64), base_rows)[:rows]
    cols["episode_ids"] += tile * (int(base["episode_ids"][-1]) + 1)
    cols["env_steps"] += tile * base_rows
    return ReplayBuffer.from_columns(cols)


def interleaved_times(repeats: int, fns: dict[Any, Callable[[], object]]) -> dict[Any, np.ndarray]:
    """Every time of each function, alternating them so they see the same memory conditions."""
    times: dict[Any, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) for name, t in times.items()}


def best_interleaved(repeats: int, fns: dict[Any, Callable[[], object]]) -> dict[Any, float]:
    return {name: float(t.min()) for name, t in interleaved_times(repeats, fns).items()}


def _print_headline(mb: float, times: dict[str, np.ndarray]) -> None:
    """The bar's comparison on its own: the compressed layouts' large temporary allocations
    change the allocator's state (glibc's mmap threshold) between the table's timings, which
    moves numpy.load's best time by up to 2x; here only the three reads alternate."""
    base = times["numpy.load"]
    print(f"headline: the default layout against numpy.load, {len(base)} interleaved rounds")
    print(f"{'read':<24}{'best MB/s':>10}{'median MB/s':>12}{'best/np':>9}{'median/np':>10}")
    for name, t in times.items():
        best, median = t.min(), float(np.median(t))
        print(
            f"{name:<24}{mb / best:>10.0f}{mb / median:>12.0f}"
            f"{base.min() / best:>9.2f}{np.median(base) / median:>10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    buffer = tiled_hopper_buffer(args.rows)
    cols = buffer.columns()
    mb = sum(v.nbytes for v in cols.values()) / 1e6
    meta = BufferMetadata("Hopper-v5", seed=0)
    print(f"buffer: {args.rows} transitions, {mb:.1f} MB of columns (best of {args.repeats})")

    with tempfile.TemporaryDirectory() as tmp:
        npy_dir = Path(tmp) / "npy"
        npy_dir.mkdir()

        def np_save() -> None:
            for k, v in cols.items():
                np.save(npy_dir / f"{k}.npy", v)

        def np_load() -> None:
            for k in cols:
                np.load(npy_dir / f"{k}.npy")

        layouts = {c: Path(tmp) / f"buffer-{c or 'none'}.h5" for c in (None, "lzf", "gzip")}
        writes = {"numpy": np_save} | {
            c: (lambda p=p, c=c: write_buffer(p, buffer, meta, compression=c))
            for c, p in layouts.items()
        }
        reads: dict[tuple[str | None, bool], Callable[[], object]] = {("numpy", False): np_load}
        for c, p in layouts.items():
            for verify in (True, False):
                reads[c, verify] = lambda p=p, v=verify: read_buffer(p, verify=v)
        reads["crc32", False] = lambda: [checksum(v) for v in cols.values()]
        t_w = best_interleaved(args.repeats, writes)
        headline = {
            "numpy.load": np_load,
            "read_buffer, verified": lambda: read_buffer(layouts[None]),
            "read_buffer, skipped": lambda: read_buffer(layouts[None], verify=False),
        }
        _print_headline(mb, interleaved_times(max(15, args.repeats), headline))
        t_r = best_interleaved(args.repeats, reads)
        t_crc = t_r.pop(("crc32", False))
        print(f"{'format':<18}{'write MB/s':>12}{'file MB':>10}{'write/np':>10}")
        for key in writes:
            size = mb if key == "numpy" else layouts[key].stat().st_size / 1e6
            print(
                f"{_name(key):<18}{mb / t_w[key]:>12.0f}{size:>10.1f}"
                f"{t_w['numpy'] / t_w[key]:>10.2f}"
            )
        print(f"{'format':<18}{'checksums':>10}{'read MB/s':>12}{'read/np':>10}")
        np_read = t_r["numpy", False]
        for (key, verify), seconds in t_r.items():
            checked = "-" if key == "numpy" else "verified" if verify else "skipped"
            print(f"{_name(key):<18}{checked:>10}{mb / seconds:>12.0f}{np_read / seconds:>10.2f}")
        print(
            f"the digest (xxh3-64) of the columns alone (in memory): {mb / t_crc:.0f} MB/s, "
            f"{t_crc / np_read:.2f}x the time of numpy.load"
        )
    print(
        "* the default layout (chunked, uncompressed). HDF5 reads include the reader's checks "
        "of every row (dtypes, shapes, NaN/inf, provenance order, episode structure); "
        "'verified' adds the xxh3-64 digest of every column (read_buffer's default)."
    )


def _name(key: str | None) -> str:
    return (
        "numpy .npy" if key == "numpy" else f"hdf5 {key or 'none'}" + (" *" if key is None else "")
    )


if __name__ == "__main__":
    main()
