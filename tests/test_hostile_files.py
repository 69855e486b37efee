"""Tiny hostile files must be refused fast, in bounded memory, with one line naming the file.

The pattern: ``_codecs.encode(x, "hex")`` doubles ``x``, and both the CIFAR batch unpickler and
torch's ``weights_only`` unpickler used to admit it, so a pickle nesting ~34 calls (a few hundred
bytes) asks for ~24 GB. Each hostile load runs in a child process with its address space capped at
1.5 GiB above what it had after imports, and a 60 s timeout; the child reports the exception, the
time taken and how much its peak RSS (VmHWM, reset before each load) grew.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_datasets import write_cifar_batch
from torch import nn

from harness.checkpoint import load_checkpoint, save_checkpoint
from harness.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]
LEVELS = 34  # 2**34 bytes = 16 GiB for the last level alone
MAX_SECONDS = 5.0
MAX_RSS_GROWTH = 300 * 2**20

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc/self/status are Linux-only")


# --------------------------------------------------------------------------- crafting pickles by hand


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE: a str under any encoding=


def _py2_str(raw: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle wrote it (SHORT_BINSTRING / BINSTRING); bytes under encoding="bytes"."""
    return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw


def nested_encode_pickle(levels: int = LEVELS, key: str = "data") -> bytes:
    """``{key: encode(...encode(encode("a", "latin1"), "hex")..., "hex")}``: 2**levels bytes from a few hundred."""
    out = b"\x80\x02}" + _unicode(key)                               # PROTO 2, EMPTY_DICT, the key
    out += b"c_codecs\nencode\nq\x00" + b"h\x00" * levels            # GLOBAL, BINPUT 0, BINGET 0 per level
    out += _unicode("a") + _unicode("latin1") + b"\x86R"             # TUPLE2, REDUCE: b"a"
    out += _unicode("hex") + b"q\x01\x86R" + b"h\x01\x86R" * (levels - 1)  # each level doubles the bytes
    return out + b"s."                                               # SETITEM, STOP


def repeated_latin1_pickle(chars: int = 1 << 16, repeats: int = 20_000) -> bytes:
    """A list of ``repeats`` fresh ``encode(s, "latin1")`` of one memoised ``chars``-long string (~1.3 GB)."""
    out = b"\x80\x02}" + _py2_str(b"data") + b"]c_codecs\nencode\nq\x00" + _unicode("x" * chars) + b"q\x01"
    out += _unicode("latin1") + b"q\x02\x86R" + b"a"                 # first call, APPEND
    out += b"h\x00h\x01h\x02\x86Ra" * repeats                        # the same call again and again
    return out + b"s."


def write_py2_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """A batch as the official files are: Python 2 cPickle protocol 2, strings as BINSTRING, no _codecs."""
    n = data.shape[0]
    array = (b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85" + _py2_str(b"b") + b"\x87R"
             + b"(K\x01J" + struct.pack("<i", n) + b"M\x00\x0c\x86"                       # version 1, shape (n, 3072)
             + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"                 # dtype("u1", 0, 1)
             + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # its state
             + b"\x89" + _py2_str(data.tobytes()) + b"tb")                                # fortran=False, bytes
    out = b"\x80\x02}q\x00(" + _py2_str(b"data") + array
    out += _py2_str(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    out += _py2_str(b"batch_label") + _py2_str(b"testing batch 1 of 1")
    out += _py2_str(b"filenames") + b"](" + b"".join(_py2_str(b"img_%d.png" % i) for i in range(n)) + b"e"
    path.write_bytes(out + b"u.")


def torch_zip(pickle_bytes: bytes, extra: dict[str, bytes] | None = None, compress: int = zipfile.ZIP_STORED) -> bytes:
    """A torch.save-style zip archive around ``pickle_bytes`` (as ``archive/data.pkl``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        for name, content in (extra or {}).items():
            archive.writestr(f"archive/{name}", content)
        archive.writestr("archive/version", "3\n")
    return buf.getvalue()


def _long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def call_pickle(module: str, name: str, arg: int) -> bytes:
    """``{"format": "genbench.checkpoint/1", "x": module.name(arg)}`` as the weights-only unpickler reads it."""
    return (b"\x80\x02}(" + _unicode("format") + _unicode("genbench.checkpoint/1") + _unicode("x")
            + f"c{module}\n{name}\n".encode() + _long1(arg) + b"\x85R" + b"u.")  # TUPLE1, REDUCE, SETITEMS, STOP


# --------------------------------------------------------------------------- loading in a capped child


_CHILD = r"""
import contextlib, io, json, resource, sys, time
import numpy, torch  # imported before the cap, so the baseline includes them
from harness.checkpoint import load_checkpoint
from harness.cli import main
from harness.datasets import load_dataset

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

def reset_peak():  # Linux >= 4.0: "5" resets VmHWM (peak RSS) to the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # then VmHWM is the peak since start, and growth is measured from the previous peak

cap = status("VmSize") + int(1.5 * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = []
for kind, target in json.loads(sys.argv[1]):
    reset_peak()
    before = status("VmHWM")
    start = time.perf_counter()
    stderr = io.StringIO()
    result = {"error": None, "value_error": False, "message": "", "rc": None}
    try:
        with contextlib.redirect_stderr(stderr):
            if kind == "cifar":
                load_dataset(target)
            elif kind == "checkpoint":
                load_checkpoint(target)
            elif kind == "weights":  # a feature network's state dict, zip or legacy format
                from pathlib import Path
                from harness.core.torch_files import preflight
                preflight(Path(target), kind="weights file", hint="save a state dict", allow_legacy=True)
                torch.load(target, map_location="cpu", weights_only=True)
            elif kind == "inception-cli":
                result["rc"] = main(["eval-samples", "--samples", "digits-test", "--reference", "digits-test",
                                     "--num-samples", "20", "--metrics", "fid", "--inception-weights", target, "--quiet"])
            else:
                result["rc"] = main(["eval", "--checkpoint", target, "--dataset", target])
    except BaseException as err:
        result.update(error=type(err).__name__, value_error=isinstance(err, ValueError), message=str(err))
    result.update(seconds=time.perf_counter() - start, stderr=stderr.getvalue(),
                  rss_growth=status("VmHWM") - before)
    results.append(result)
print(json.dumps(results))
"""


def load_capped(*cases: tuple[str, Path | str]) -> list[dict]:
    """Run each ``(kind, target)`` load in one capped child; return what each raised, took and grew."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([(k, str(t)) for k, t in cases])],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused_fast(result: dict, path: Path, match: str) -> None:
    assert result["value_error"], result
    message = result["message"]
    assert "\n" not in message and str(path) in message and match in message, message
    assert result["seconds"] < MAX_SECONDS, result
    assert result["rss_growth"] < MAX_RSS_GROWTH, result


# --------------------------------------------------------------------------- CIFAR-10 batches


def test_cifar_hostile_batches_refused_fast_in_bounded_memory(tmp_path: Path) -> None:
    nested = tmp_path / "nested" / "cifar-10-batches-py"
    nested.mkdir(parents=True)
    (nested / "test_batch").write_bytes(nested_encode_pickle())
    assert (nested / "test_batch").stat().st_size < 500
    repeated = tmp_path / "repeated" / "cifar-10-batches-py"
    repeated.mkdir(parents=True)
    (repeated / "test_batch").write_bytes(repeated_latin1_pickle())
    assert (repeated / "test_batch").stat().st_size < 400_000  # would unpickle to ~1.3 GB

    first, second = load_capped(("cifar", f"{nested}:test"), ("cifar", f"{repeated}:test"))
    assert_refused_fast(first, nested / "test_batch", "refusing _codecs.encode(bytes, 'hex')")
    assert_refused_fast(second, repeated / "test_batch", "_codecs.encode calls would produce over")


class _Reduce:
    """Pickles as ``func(*args)``, optionally followed by BUILD with ``state``."""

    def __init__(self, func: object, args: tuple, state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, as numpy pickles arrays


@pytest.mark.parametrize(("value", "match"), [
    (_Reduce(np.ndarray, ((4, 3072),)), r"refusing numpy\.ndarray\(\.\.\.\)"),
    (_Reduce(np.dtype, ("O", False, True)), "refusing numpy dtype 'O'"),
    (_Reduce(np.dtype, ("V8", False, True)), "refusing numpy dtype 'V8'"),
    (_Reduce(_RECONSTRUCT, (np.ndarray, (5,), b"b")), "refusing numpy _reconstruct arguments"),
    (_Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2, 3072), np.dtype(np.uint8), False, b"x" * 10)),
     "needs 6144 bytes but 10 are stored"),
    (_Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype(np.uint8), False, [1, 2])),
     "refusing a numpy array state not written by numpy"),
    (_Reduce(__import__("_codecs").encode, ("abc", "utf-16")), r"refusing _codecs\.encode\(str, 'utf-16'\)"),
    (_Reduce(print, ("pwned",)), r"refusing to load (__builtin__|builtins)\.print"),
])
def test_cifar_refuses_what_batches_never_hold(tmp_path: Path, value: object, match: str) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "test_batch").write_bytes(pickle.dumps({b"data": value, b"labels": [0, 1]}, protocol=2))
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(f"{root}:test")
    assert "\n" not in str(info.value) and str(root / "test_batch") in str(info.value)


@pytest.mark.parametrize(("batch", "match"), [
    ([1, 2], "missing b'data'/b'labels'"),
    ({b"data": [[0] * 3072], b"labels": [0]}, "b'data' is a list, not an array"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, r"labels outside 0\.\.9"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}, "b'labels' is a list, not a list of ints"),
    ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, r"got data float32 \[1, 3072\]"),
])
def test_cifar_refuses_wrong_structure(tmp_path: Path, batch: object, match: str) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(f"{root}:test")
    assert "\n" not in str(info.value) and "test_batch" in str(info.value)


def test_cifar_truncated_batch_refused(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    write_py2_cifar_batch(root / "test_batch", np.zeros((3, 3072), np.uint8), [0, 1, 2])
    (root / "test_batch").write_bytes((root / "test_batch").read_bytes()[:5000])  # inside the 9216-byte data string
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch .not a complete pickle"):
        load_dataset(f"{root}:test")


def test_genuine_full_size_batches_still_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (10_000, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 10_000).tolist()
    for writer in (write_py2_cifar_batch, write_cifar_batch):  # the official format; a Python 3 re-save
        root = tmp_path / writer.__name__ / "cifar-10-batches-py"
        root.mkdir(parents=True)
        writer(root / "test_batch", data, labels)
        reference = pickle.loads((root / "test_batch").read_bytes(), encoding="bytes")  # numpy's own reading
        np.testing.assert_array_equal(reference[b"data"], data)
        test = load_dataset(f"{root}:test")
        assert test.x.shape == (10_000, 3, 32, 32) and test.x.dtype == np.uint8 and test.x.flags.writeable
        np.testing.assert_array_equal(test.x.reshape(10_000, 3072), data)
        assert test.labels.tolist() == labels
    assert b"_codecs" not in (tmp_path / "write_py2_cifar_batch" / "cifar-10-batches-py" / "test_batch").read_bytes()


def test_python3_batch_with_numpy_labels_still_loads(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = {b"data": data, b"labels": [np.int64(3), np.uint8(7)], b"batch_label": b"x", b"filenames": [b"a", b"b"]}
    (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = load_dataset(f"{root}:test")
    np.testing.assert_array_equal(test.x.reshape(2, 3072), data)
    assert test.labels.tolist() == [3, 7]


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_hostile_files_refused_fast_in_bounded_memory(tmp_path: Path) -> None:
    nested_zip = tmp_path / "nested.pt"
    nested_zip.write_bytes(torch_zip(nested_encode_pickle()))
    assert nested_zip.stat().st_size < 2000
    nested_plain = tmp_path / "nested-plain.pt"  # a bare pickle: torch's legacy path unpickled it too
    nested_plain.write_bytes(nested_encode_pickle())
    zeros = tmp_path / "bytearray.pt"  # bytearray(2**34): 16 GiB of zeros
    zeros.write_bytes(torch_zip(call_pickle("builtins", "bytearray", 2**34)))
    tensor = tmp_path / "tensor.pt"  # torch.FloatTensor(2**34): 64 GiB
    tensor.write_bytes(torch_zip(call_pickle("torch", "FloatTensor", 2**34)))
    cli = tmp_path / "cli.pt"
    cli.write_bytes(nested_zip.read_bytes())

    results = load_capped(("checkpoint", nested_zip), ("checkpoint", nested_plain), ("checkpoint", zeros),
                          ("checkpoint", tensor), ("cli", cli))
    assert_refused_fast(results[0], nested_zip, "archive/data.pkl uses _codecs.encode, which genbench checkpoints never contain")
    assert_refused_fast(results[1], nested_plain, "uses _codecs.encode")
    assert_refused_fast(results[2], zeros, "uses builtins.bytearray")
    assert_refused_fast(results[3], tensor, "uses torch.FloatTensor")
    cli_result = results[4]
    assert cli_result["error"] is None and cli_result["rc"] == 2, cli_result
    assert cli_result["seconds"] < MAX_SECONDS and cli_result["rss_growth"] < MAX_RSS_GROWTH, cli_result
    lines = cli_result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genbench eval: error: ") and "cli.pt is refused" in lines[0], lines


def _genuine(path: Path) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(0)
    save_checkpoint(path, model_name="tiny", config={"sizes": [3, 4]}, state_dict=model.state_dict(), meta={"step": 1},
                    training_state={"model": model.state_dict(), "optimizers": [optimizer.state_dict()],
                                    "generator": generator.get_state(), "step": 1,
                                    "batches": {"perm": torch.randperm(10, generator=generator), "pos": 4},
                                    "extras": [nn.Parameter(torch.ones(2)), torch.Size([2, 3]), torch.float16]})
    return model


def test_genuine_checkpoint_still_loads_and_never_needs_codecs(tmp_path: Path) -> None:
    path = tmp_path / "good.pt"
    model = _genuine(path)
    with zipfile.ZipFile(path) as archive:
        pickle_bytes = archive.read("archive/data.pkl")
        assert all(e.compress_type == zipfile.ZIP_STORED for e in archive.infolist())
    globals_used = {arg for op, arg, _ in pickletools.genops(pickle_bytes) if op.name in ("GLOBAL", "STACK_GLOBAL")}
    assert not any("_codecs" in g or "bytearray" in g for g in globals_used), globals_used
    ckpt = load_checkpoint(path)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in model.state_dict().items())
    assert ckpt.training_state is not None and ckpt.training_state["extras"][1:] == [torch.Size([2, 3]), torch.float16]


def test_checkpoint_zip_refusals(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    _genuine(good)
    with zipfile.ZipFile(good) as archive:
        entries = {e.filename: archive.read(e) for e in archive.infolist()}

    def rezip(name: str, items: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compress) as archive:
            for entry, content in items.items():
                archive.writestr(entry, content)
        (tmp_path / name).write_bytes(buf.getvalue())
        return tmp_path / name

    inflating = rezip("deflated.pt", {**entries, "archive/data/0": bytes(1 << 20)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match=r"deflated\.pt is refused: zip entry archive/data\.pkl is compressed"):
        load_checkpoint(inflating)
    no_pickle = rezip("no-pickle.pt", {k: v for k, v in entries.items() if not k.endswith("data.pkl")})
    with pytest.raises(ValueError, match=r"no-pickle\.pt is not a readable torch file .*has no archive/data\.pkl"):
        load_checkpoint(no_pickle)
    twice = rezip("twice.pt", {**entries, "archive/DATA.PKL": nested_encode_pickle()})
    with pytest.raises(ValueError, match=r"twice\.pt is not a readable torch file .*duplicate entries"):
        load_checkpoint(twice)
    garbage = rezip("garbage.pt", {**entries, "archive/data.pkl": b"\x80\x02\xff\xfe"})
    with pytest.raises(ValueError, match=r"garbage\.pt is not a readable torch file .*data\.pkl is not a pickle"):
        load_checkpoint(garbage)
    legacy = tmp_path / "legacy.pt"
    torch.save({"format": "genbench.checkpoint/1"}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy\.pt is not a readable torch file .*not a zip archive"):
        load_checkpoint(legacy)


# --------------------------------------------------------------------------- feature-network weights


def _legacy_state_dict(path: Path, numel: int = 70_000) -> bytes:
    torch.save({"w": torch.arange(numel, dtype=torch.float32)}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


def _with_storage_numel(raw: bytes, numel: int, declared: int) -> bytes:
    """``raw`` (legacy format) with the storage id's element count set to ``declared``: the first
    4-byte BININT equal to ``numel`` in the object pickle is the persistent id's (its size tuple follows)."""
    offset = 0
    for _ in range(3):  # magic, protocol, system info
        offset += max(pos for _, _, pos in pickletools.genops(raw[offset:])) + 1
    for opcode, arg, pos in pickletools.genops(raw[offset:]):
        if opcode.name == "BININT" and arg == numel:
            at = offset + pos + 1
            return raw[:at] + declared.to_bytes(4, "little", signed=True) + raw[at + 4:]
    raise AssertionError("no 4-byte element count in the pickle")


def test_legacy_format_weights_load_and_hostile_ones_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """Feature weights may be in torch's legacy (pre-1.6) format, which allocates each storage at the
    size its pickle declares before reading: a genuine file loads; one declaring 8 GiB of storage in
    280 KB, or naming _codecs.encode, is refused before torch.load, also through --inception-weights."""
    genuine = tmp_path / "legacy.pth"
    raw = _legacy_state_dict(genuine)
    huge = tmp_path / "huge-storage.pth"
    huge.write_bytes(_with_storage_numel(raw, 70_000, 2**31 - 1))
    nested = tmp_path / "nested-legacy.pth"
    nested.write_bytes(nested_encode_pickle())
    cli = tmp_path / "inception.pth"
    cli.write_bytes(huge.read_bytes())
    results = load_capped(("weights", genuine), ("weights", huge), ("weights", nested), ("inception-cli", cli))
    assert results[0]["error"] is None, results[0]
    assert_refused_fast(results[1], huge, "storages declare 8589934588 bytes")
    assert_refused_fast(results[2], nested, "uses _codecs.encode")
    cli_result = results[3]
    assert cli_result["error"] is None and cli_result["rc"] == 2, cli_result
    assert cli_result["rss_growth"] < MAX_RSS_GROWTH, cli_result
    lines = cli_result["stderr"].strip().splitlines()
    assert len(lines) == 1 and "inception.pth is refused: its storages declare" in lines[0], lines
