"""Checksums computed block by block as columns are read: the same data and the same verdicts as
a checksum of the whole column, whatever the block size."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from tomrepro.core import buffer_file as bf
from tomrepro.core.buffer_file import checksum, read_buffer
from tomrepro.core.errors import BufferFormatError


@pytest.fixture
def covered(monkeypatch) -> list[tuple[int, int]]:
    """(bytes checksummed block by block, column bytes) of every column verified."""
    seen: list[tuple[int, int]] = []
    verify = bf._StreamedChecksum.verify

    def spy(self, expected, out, what):
        seen.append((self.done, out.nbytes))
        return verify(self, expected, out, what)

    monkeypatch.setattr(bf._StreamedChecksum, "verify", spy)
    return seen


@pytest.mark.parametrize("block", [256, 4096, 1 << 30])
def test_any_block_size_reads_the_same_columns(buffer_file, monkeypatch, covered, block):
    whole = read_buffer(buffer_file, verify=False).buffer.columns()
    monkeypatch.setattr(bf, "READ_BLOCK", block)
    got = read_buffer(buffer_file).buffer.columns()
    for name, values in whole.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert covered and all(done == size for done, size in covered)  # no whole-column fallback


def test_damage_in_a_late_block_fails_the_checksum(buffer_file, monkeypatch):
    monkeypatch.setattr(bf, "READ_BLOCK", 256)
    with h5py.File(buffer_file, "r") as f:
        ds = f["next_observations"]
        info = ds.id.get_chunk_info(ds.id.get_num_chunks() - 1)
        row_bytes = ds.dtype.itemsize * ds.shape[1]
        end = info.byte_offset + (ds.shape[0] - info.chunk_offset[0]) * row_bytes
    offset = end - 64  # the column's last rows: its last block
    with open(buffer_file, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.full(4, 0.25, np.float32).tobytes())
    with pytest.raises(BufferFormatError, match="'next_observations' fails its checksum"):
        read_buffer(buffer_file)


def test_blocks_out_of_order_fall_back_to_the_whole_column():
    data = np.arange(1000, dtype=np.float64)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: list[Future[None]] = []
        stream = bf._StreamedChecksum(pool, pending)
        stream.feed(data, 4000, 8000)  # the second half first: not a running checksum
        stream.feed(data, 0, 4000)
        for job in pending:
            job.result()
        assert stream.done != data.nbytes  # sanity check: the stream did not cover the column
        stream.verify(checksum(data), data, "column 'x'")
        with pytest.raises(BufferFormatError, match="'x' fails its checksum"):
            stream.verify(checksum(data) ^ 1, data, "column 'x'")
