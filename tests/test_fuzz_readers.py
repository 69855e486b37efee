"""Fuzzing the readers of every file format we parse (issue 13): npz, IDX, image folders, CIFAR-10
batches and JSON records. Each input is a valid file damaged by hypothesis (truncated, bytes
flipped or replaced, or random bytes); it either loads or raises one of the errors the command
line turns into a one-line message (``harness.cli.USAGE_ERRORS``). Any other exception (KeyError,
EOFError, zipfile.BadZipFile, struct.error, an unpickling error, MemoryError) is a failure."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import USAGE_ERRORS
from harness.datasets import load_dataset
from harness.store.records import read_record

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1), labels=np.array([0, 1]))
    return buf.getvalue()


def _idx() -> bytes:
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    return struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 3, 4, 4) + images.tobytes()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 90, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _cifar_batch() -> bytes:
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1], b"batch_label": b"testing batch 1 of 1"}
    return pickle.dumps(batch, protocol=2)


def _record() -> bytes:
    """A committed leaderboard record, cut to its metrics so the fuzzing stays fast."""
    record = json.loads((Path(__file__).parents[1] / "results" / "quick" / "chance-8g" / "seed0.json").read_text())
    record["metrics"] = {"mmd2": record["metrics"]["mmd2"]}
    record["metrics"]["mmd2"].pop("uncertainty", None)
    return json.dumps(record).encode()


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` truncated, with bytes overwritten, with bytes inserted, or replaced by random bytes."""
    n = len(valid)
    truncated = st.integers(0, n - 1).map(lambda k: valid[:k])
    overwritten = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: _overwrite(valid, edits))
    inserted = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(lambda a: valid[:a[0]] + a[1] + valid[a[0]:])
    return st.one_of(truncated, overwritten, inserted, st.binary(max_size=2 * n))


def _overwrite(valid: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(valid)
    for i, v in edits:
        out[i] = v
    return bytes(out)


def _loads_or_says_why(load) -> None:
    try:
        load()
    except USAGE_ERRORS:
        pass


@FUZZ
@given(damaged(_npz()))
def test_npz_reader(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.npz"
        path.write_bytes(data)
        _loads_or_says_why(lambda: load_dataset(str(path)))


@FUZZ
@given(damaged(_idx()), st.booleans())
def test_idx_reader(data, gzipped):
    with tempfile.TemporaryDirectory() as tmp:
        name = "train-images-idx3-ubyte" + (".gz" if gzipped else "")
        (Path(tmp) / name).write_bytes(gzip.compress(data) if gzipped else data)
        _loads_or_says_why(lambda: load_dataset(tmp))


@FUZZ
@given(damaged(_png()))
def test_image_folder_reader(data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "0.png").write_bytes(_png())
        (Path(tmp) / "1.png").write_bytes(data)
        _loads_or_says_why(lambda: load_dataset(tmp))


@FUZZ
@given(damaged(_cifar_batch()))
def test_cifar_batch_reader(data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "test_batch").write_bytes(data)
        _loads_or_says_why(lambda: load_dataset(f"{tmp}:test"))


@FUZZ
@given(damaged(_record()))
def test_record_reader(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        path.write_bytes(data)
        _loads_or_says_why(lambda: read_record(path))


def test_the_seed_files_are_valid():
    """The undamaged inputs load, so the fuzzing starts from files the readers accept."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "s.npz").write_bytes(_npz())
        assert load_dataset(str(root / "s.npz")).x.shape[0] == 2
        (root / "idx").mkdir()
        (root / "idx" / "train-images-idx3-ubyte").write_bytes(_idx())
        assert load_dataset(str(root / "idx")).x.shape[0] == 3
        (root / "img").mkdir()
        (root / "img" / "0.png").write_bytes(_png())
        assert load_dataset(str(root / "img")).x.shape[0] == 1
        (root / "cifar").mkdir()
        (root / "cifar" / "test_batch").write_bytes(_cifar_batch())
        assert load_dataset(f"{root / 'cifar'}:test").x.shape == (2, 3, 32, 32)
        (root / "r.json").write_bytes(_record())
        read_record(root / "r.json")
