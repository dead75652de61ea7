"""One fuzz case, run in its own process by tests/test_fuzz_reader.py: `tomrepro validate FILE`
(read_buffer, deep, which reads every snapshot too); on success prints the digest of the data."""

from __future__ import annotations

import hashlib
import sys

from tomrepro.cli import main
from tomrepro.core.buffer_file import read_buffer, read_snapshot


def data_digest(path: str) -> str:
    loaded = read_buffer(path)
    h = hashlib.sha256()
    for name, column in sorted(loaded.buffer.columns().items()):
        h.update(name.encode() + column.tobytes())
    for version in sorted(loaded.snapshot_steps):
        snap = read_snapshot(path, version)
        h.update(str((version, snap.env_step)).encode())
        for key, tensor in sorted(snap.tensors.items()):
            h.update(key.encode() + tensor.tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    code = main(["validate", sys.argv[1]])
    if code == 0:
        print(data_digest(sys.argv[1]))
    sys.exit(code)
