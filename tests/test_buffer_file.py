"""Schema-v1 files: exact round trips, a corpus of bad files refused through the CLI, atomicity."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomrepro.core.buffer import COLUMN_NAMES, ReplayBuffer
from tomrepro.core.buffer_file import (
    CHECKSUM_ATTR,
    BufferMetadata,
    PolicySnapshot,
    check_actor_tensors,
    checksum,
    content_digest,
    read_buffer,
    read_metadata,
    read_snapshot,
    write_buffer,
)
from tomrepro.core.errors import BufferFormatError, TomreproError


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_round_trip_is_exact(tmp_path, hopper_buffer, snapshots, compression):
    path = tmp_path / "b.h5"
    meta = BufferMetadata("Hopper-v5", seed=3, config={"profile": "x", "n": [1, 2]})
    write_buffer(path, hopper_buffer, meta, snapshots, compression=compression)
    loaded = read_buffer(path, deep=True)
    for name in COLUMN_NAMES:
        original, back = hopper_buffer.columns()[name], loaded.buffer.columns()[name]
        assert back.dtype == original.dtype
        np.testing.assert_array_equal(back, original)
    assert loaded.metadata.task_id == "Hopper-v5"
    assert loaded.metadata.seed == 3
    assert loaded.metadata.config == {"profile": "x", "n": [1, 2]}
    assert loaded.metadata.versions["mujoco"] and loaded.metadata.versions["torch"]
    assert loaded.snapshot_steps == {1: 200, 2: 400}
    snap = read_snapshot(path, 2)
    for key, tensor in snapshots[1].tensors.items():
        np.testing.assert_array_equal(snap.tensors[key], tensor)


def test_same_data_gives_the_same_content_digest(tmp_path, hopper_buffer):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_buffer(a, hopper_buffer, BufferMetadata("Hopper-v5", 3, created_at="2026-01-01"))
    write_buffer(b, hopper_buffer, BufferMetadata("Hopper-v5", 3, created_at="2026-06-01"))
    assert content_digest(a) == content_digest(b)
    write_buffer(b, hopper_buffer, BufferMetadata("Hopper-v5", 4))
    assert content_digest(a) != content_digest(b)


def test_source_date_epoch_gives_byte_identical_files(tmp_path, hopper_buffer, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_buffer(a, hopper_buffer, BufferMetadata("Hopper-v5", 3))
    write_buffer(b, hopper_buffer, BufferMetadata("Hopper-v5", 3))
    assert a.read_bytes() == b.read_bytes()


# --- the corpus of bad files: each must give one line on stderr and exit code 2 -----------------


def _edit(fn: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            fn(f)

    return apply


def _replace(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """A column rewritten with a valid checksum: the structural check must catch it."""

    def fn(f: h5py.File) -> None:
        data = make(f[name][()])
        del f[name]
        f.create_dataset(name, data=data).attrs[CHECKSUM_ATTR] = checksum(data)

    return _edit(fn)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_nan(name: str, value: float) -> Callable[[Path], None]:
    def make(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[7] = value
        return a

    return _replace(name, make)


BAD_FILES = {
    "missing file": (lambda p: p.unlink(), "no such file"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
    "not HDF5": (lambda p: p.write_text("observations,actions\n1,2\n"), "not an HDF5 file"),
    "truncated": (_truncate, "truncated"),
    "empty file": (lambda p: p.write_bytes(b""), "not an HDF5 file"),
    "missing column": (_edit(lambda f: f.__delitem__("actions")), "missing column 'actions'"),
    "wrong dtype": (_replace("observations", lambda a: a.astype(np.float64)), "dtype float64"),
    "wrong shape": (_replace("actions", lambda a: a[:, :2]), "act 3"),
    "length mismatch": (_replace("rewards", lambda a: a[:-5]), "shape"),
    "NaN in observations": (_set_nan("observations", np.nan), "observations contains NaN"),
    "inf in next observations": (_set_nan("next_observations", np.inf), "NaN or inf"),
    "unknown schema version": (
        _edit(lambda f: f.attrs.__setitem__("schema_version", 7)),
        "unsupported schema version 7",
    ),
    "not our schema": (
        _edit(lambda f: f.attrs.__setitem__("schema", "d4rl")),
        "not a tomrepro replay buffer",
    ),
    "incomplete": (_edit(lambda f: f.attrs.__setitem__("complete", False)), "incomplete"),
    "unknown task": (
        _edit(lambda f: f.attrs.__setitem__("task_id", "Hopper-v9")),
        "unknown task 'Hopper-v9'",
    ),
    "env_id of another task": (
        _edit(lambda f: f.attrs.__setitem__("env_id", "Walker2d-v5")),
        "env_id 'Walker2d-v5'",
    ),
    "obs_dim attribute lies": (
        _edit(lambda f: f.attrs.__setitem__("obs_dim", 12)),
        "obs_dim/act_dim attributes disagree",
    ),
    "num_transitions lies": (
        _edit(lambda f: f.attrs.__setitem__("num_transitions", 5)),
        "num_transitions",
    ),
    "column of strings": (
        _replace("rewards", lambda a: a.astype("S8")),
        "column rewards has dtype",
    ),
    "column with an extra dimension": (
        _replace("terminations", lambda a: a[:, None]),
        "expected bool with 1 dimension",
    ),
    "env steps out of order": (
        _replace("env_steps", lambda a: a[::-1].copy()),
        "strictly increasing",
    ),
    "snapshot without version": (
        _edit(lambda f: f["policy_snapshots/000001"].attrs.__delitem__("version")),
        "lacks integer version",
    ),
    "snapshot env_step retyped to a float": (
        _edit(lambda f: f["policy_snapshots/000001"].attrs.__setitem__("env_step", 1.5)),
        "lacks integer version/env_step",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_one_line_error_with_exit_2(case, buffer_file, run_cli):
    corrupt, expected = BAD_FILES[case]
    corrupt(buffer_file)
    for command in ("inspect", "validate"):
        code, out, err = run_cli(command, buffer_file)
        assert code == 2, (case, command, out, err)
        assert err.count("\n") == 1 and err.startswith("tomrepro: error: "), err
        assert expected in err, err
        assert "Traceback" not in err


def test_validate_catches_what_only_the_deep_check_sees(buffer_file, run_cli):
    def shift(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[10, 0] += 1.0
        return a

    _replace("next_observations", shift)(buffer_file)
    assert read_buffer(buffer_file).buffer is not None  # the fast reader's per-row checks pass
    code, _, err = run_cli("validate", buffer_file)
    assert code == 2 and "next_observations[10] differs" in err


def test_incomplete_file_can_be_inspected_on_request(buffer_file, run_cli):
    _edit(lambda f: f.attrs.__setitem__("complete", False))(buffer_file)
    code, out, _ = run_cli("inspect", "--allow-incomplete", buffer_file)
    assert code == 0 and "INCOMPLETE" in out
    assert read_metadata(buffer_file, allow_incomplete=True).complete is False


# --- atomic writes ---------------------------------------------------------------------------


def test_failed_write_leaves_the_existing_file_untouched(tmp_path, buffer_file, hopper_buffer):
    before = buffer_file.read_bytes()
    bad_snapshot = PolicySnapshot(5, 10_000, {"w": np.array([np.nan], np.float32)})
    with pytest.raises(BufferFormatError, match="finite"):
        write_buffer(buffer_file, hopper_buffer, BufferMetadata("Hopper-v5", 0), [bad_snapshot])
    assert buffer_file.read_bytes() == before
    assert [p.name for p in buffer_file.parent.iterdir()] == [buffer_file.name]


def test_invalid_data_is_refused_before_anything_is_written(tmp_path, hopper_buffer):
    cols = {k: v.copy() for k, v in hopper_buffer.columns().items()}
    cols["rewards"][3] = np.nan
    with pytest.raises(BufferFormatError, match="rewards contains NaN"):
        bad = ReplayBuffer.from_columns(cols, check=False)
        write_buffer(tmp_path / "x.h5", bad, BufferMetadata("Hopper-v5", 0))
    assert not list(tmp_path.iterdir())


def test_wrong_task_dims_are_refused(tmp_path, hopper_buffer):
    with pytest.raises(BufferFormatError, match="do not match task"):
        write_buffer(tmp_path / "x.h5", hopper_buffer, BufferMetadata("Walker2d-v5", 0))


def test_unwritable_destination_is_a_clear_error(tmp_path, hopper_buffer):
    with pytest.raises(TomreproError, match="does not exist"):
        write_buffer(tmp_path / "no" / "x.h5", hopper_buffer, BufferMetadata("Hopper-v5", 0))


def test_file_is_readable_by_plain_h5py(buffer_file, hopper_buffer):
    with h5py.File(buffer_file, "r") as f:
        assert f.attrs["schema_version"] == 3
        np.testing.assert_array_equal(f["actions"][()], hopper_buffer.columns()["actions"])
        assert f["actions"].attrs["xxh3_64"] == checksum(hopper_buffer.columns()["actions"])
        assert f["observations"].chunks is not None


def test_copy_of_a_valid_file_validates(tmp_path, buffer_file, run_cli):
    copy = tmp_path / "copy.h5"
    shutil.copy(buffer_file, copy)
    code, out, err = run_cli("validate", copy)
    assert code == 0 and out.startswith("ok:") and err == ""


def _cut_layer_width(path: Path) -> None:
    """Tamper: snapshot 1's first layer loses one output unit (its bias keeps the old width)."""
    with h5py.File(path, "r+") as f:
        group = f["policy_snapshots/000001"]
        weight = group["net.layers.0.weight"][()]
        del group["net.layers.0.weight"]
        group.create_dataset("net.layers.0.weight", data=weight[:, :, :-1])


@pytest.mark.parametrize(
    "tamper",
    [
        _cut_layer_width,
        lambda p: _edit_file(p, lambda f: f["policy_snapshots/000001"].__delitem__("action_bias")),
        lambda p: _edit_file(
            p, lambda f: f["policy_snapshots/000001"].create_dataset("extra", data=np.ones(2))
        ),
    ],
    ids=["layer width cut by one", "tensor missing", "foreign tensor"],
)
def test_a_malformed_snapshot_is_refused_in_one_line(buffer_file, tmp_path, run_cli, tamper):
    tamper(buffer_file)
    before = buffer_file.read_bytes()
    code, _, err = run_cli("validate", buffer_file)
    assert code == 2 and err.count("\n") == 1 and "snapshot 1" in err, err
    code, _, err = run_cli(
        "weights", buffer_file, "--snapshot", "1", "--learner", "pmac", "--profile", "smoke",
        "--out", tmp_path / "w.npz",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "snapshot 1" in err, err
    assert buffer_file.read_bytes() == before and not (tmp_path / "w.npz").exists()


def _edit_file(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def test_snapshot_check_names_the_tensor(snapshots):
    tensors = dict(snapshots[0].tensors)
    check_actor_tensors(tensors, 11, 3)
    with pytest.raises(ValueError, match=r"'net\.layers\.0\.weight' has shape"):
        check_actor_tensors(tensors, 12, 3)
    with pytest.raises(ValueError, match=r"'net\.layers\.1\.weight' has shape"):
        check_actor_tensors(tensors, 11, 4)
    tensors["action_scale"] = tensors["action_scale"].astype(np.float64)
    with pytest.raises(ValueError, match="'action_scale' is not finite float32"):
        check_actor_tensors(tensors, 11, 3)


def _overwrite_bytes_inside(path: Path, column: str) -> None:
    """Tamper the way a disk or a careless tool does: a byte range of a float column's data
    rewritten in place, everything else (shape, dtype, attributes) intact and valid."""
    with h5py.File(path, "r") as f:
        offset = f[column].id.get_offset()
        if offset is None:  # chunked: the first chunk's offset
            offset = f[column].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 40)
        fh.write(np.full(4, 0.5, np.float32).tobytes())


def test_an_overwritten_byte_range_fails_the_checksum(buffer_file, run_cli):
    _overwrite_bytes_inside(buffer_file, "observations")
    code, _, err = run_cli("validate", buffer_file)
    assert code == 2 and err.count("\n") == 1 and "'observations' fails its checksum" in err, err
    loaded = read_buffer(buffer_file, verify=False)  # the escape for huge, trusted files
    assert len(loaded.buffer) == 600


def test_a_tampered_snapshot_tensor_fails_its_checksum(buffer_file):
    with h5py.File(buffer_file, "r+") as f:
        ds = f["policy_snapshots/000002/net.layers.1.bias"]
        ds[0, 0, 0] = ds[0, 0, 0] + 1.0
    read_snapshot(buffer_file, 1)
    with pytest.raises(BufferFormatError, match=r"snapshot 2 tensor 'net\.layers\.1\.bias' fails"):
        read_snapshot(buffer_file, 2)


def test_schema_1_files_stay_readable_and_say_they_are_unverified(buffer_file, run_cli):
    with h5py.File(buffer_file, "r+") as f:
        f.attrs["schema_version"] = 1
        for name in list(f):
            if isinstance(f[name], h5py.Dataset):
                del f[name].attrs[CHECKSUM_ATTR]
    loaded = read_buffer(buffer_file, deep=True)
    assert loaded.metadata.schema_version == 1 and len(loaded.buffer) == 600
    code, out, _ = run_cli("validate", buffer_file)
    assert code == 0 and "unverified" in out


def test_schema_2_files_are_verified_with_their_crc32(buffer_file):
    """Files written before xxh3 digests (schema 3) keep their CRC-32 check."""
    with h5py.File(buffer_file, "r+") as f:
        f.attrs["schema_version"] = 2
        for name in list(f):
            if isinstance(f[name], h5py.Dataset):
                ds = f[name]
                del ds.attrs[CHECKSUM_ATTR]
                ds.attrs["crc32"] = checksum(ds[()], version=2)
        for group in f["policy_snapshots"].values():
            for ds in group.values():
                del ds.attrs[CHECKSUM_ATTR]
                ds.attrs["crc32"] = checksum(ds[()], version=2)
    loaded = read_buffer(buffer_file, deep=True)
    assert loaded.metadata.schema_version == 2
    with h5py.File(buffer_file, "r+") as f:
        data = f["rewards"][()]
        data[3] += 1.0
        f["rewards"][...] = data
    with pytest.raises(BufferFormatError, match="fails its checksum"):
        read_buffer(buffer_file)


def test_huge_finite_values_are_read_not_mistaken_for_inf(tmp_path, hopper_buffer):
    """The reader's fast finiteness test (a sum of squares) overflows on values near float32's
    limit; its exact fallback must still accept them."""
    cols = {k: v.copy() for k, v in hopper_buffer.columns().items()}
    cols["actions"][::3] = np.float32(3e38)
    cols["rewards"][5] = np.float32(-3e38)
    path = tmp_path / "huge.h5"
    write_buffer(path, ReplayBuffer.from_columns(cols), BufferMetadata("Hopper-v5", seed=0))
    back = read_buffer(path).buffer.columns()
    np.testing.assert_array_equal(back["actions"], cols["actions"])
    assert back["rewards"][5] == np.float32(-3e38)


def test_an_empty_buffer_round_trips(tmp_path, hopper_buffer):
    """A run checkpointed before its first env step writes a buffer of no rows; a resume reads
    it."""
    empty = ReplayBuffer.from_columns({k: v[:0] for k, v in hopper_buffer.columns().items()})
    path = tmp_path / "empty.h5"
    write_buffer(path, empty, BufferMetadata("Hopper-v5", seed=0, complete=False))
    back = read_buffer(path, allow_incomplete=True, deep=True).buffer
    assert len(back) == 0
    for name, column in hopper_buffer.columns().items():
        assert back.columns()[name].shape == (0, *column.shape[1:])
