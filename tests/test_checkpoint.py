"""Self-describing checkpoints: round trip, stable hashes, clear refusals, atomic saves."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.checkpoint import FORMAT, load_checkpoint, save_checkpoint


class NotAllowed:
    """A custom class: unpickling it would run arbitrary code paths."""


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _save(path: Path, model: nn.Module) -> str:
    return save_checkpoint(path, model_name="tiny", config={"sizes": (3, 4), "act": None}, state_dict=model.state_dict(),
                           meta={"step": 10})


def test_round_trip_and_stable_sha256(tmp_path: Path) -> None:
    model = _model()
    digest = _save(tmp_path / "a.pt", model)
    assert digest == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()
    assert _save(tmp_path / "b.pt", model) == digest  # same content, same bytes
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert (ckpt.model_name, ckpt.config, ckpt.meta, ckpt.sha256) == ("tiny", {"sizes": [3, 4], "act": None}, {"step": 10}, digest)
    assert ckpt.state_dict.keys() == model.state_dict().keys()
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in model.state_dict().items())
    with pytest.raises(AttributeError):
        ckpt.model_name = "other"  # type: ignore[misc]


def test_refusals_have_clear_messages(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    _save(good, _model())
    data = good.read_bytes()

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 64 + data[64:])
    with pytest.raises(ValueError, match=r"corrupt\.pt is not a readable torch file \(corrupt or truncated"):
        load_checkpoint(corrupt)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt is not a readable torch file"):
        load_checkpoint(truncated)

    plain = tmp_path / "plain.pt"
    torch.save(_model().state_dict(), plain)
    with pytest.raises(ValueError, match=r"not a genbench checkpoint \(no 'format' key; found \['0.bias', .*--entry module:factory"):
        load_checkpoint(plain)

    code = tmp_path / "code.pt"
    torch.save({"format": FORMAT, "obj": NotAllowed()}, code)
    with pytest.raises(ValueError, match="may contain arbitrary code, and genbench never unpickles code"):
        load_checkpoint(code)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps({"x": NotAllowed()}, protocol=2))
    with pytest.raises(ValueError, match=r"needs the Python object .*NotAllowed.*never unpickles code"):
        load_checkpoint(raw_pickle)

    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    future = tmp_path / "future.pt"
    torch.save({"format": "genbench.checkpoint/2", "model": "x", "config": {}, "state_dict": {}, "meta": {}}, future)
    with pytest.raises(ValueError, match=r"format 'genbench.checkpoint/2'; this genbench reads 'genbench.checkpoint/1'"):
        load_checkpoint(future)


def test_save_rejects_non_json_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config must be JSON-serialisable"):
        save_checkpoint(tmp_path / "x.pt", model_name="m", config={"f": object()}, state_dict={}, meta={})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "ckpt.pt", _model())
    assert list(tmp_path.iterdir()) == []
