"""Self-describing model checkpoints that load without unpickling code.

A genbench checkpoint is a ``torch.save`` file of one dict::

    {"format": "genbench.checkpoint/1", "model": name, "config": {...JSON...},
     "state_dict": {name: Tensor}, "meta": {...JSON...},
     "training_state": {...}}   # optional: optimizer states, raw weights under EMA, step, RNG state

It holds only tensors and JSON values, so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: a file that would need arbitrary classes is refused, never
executed. Saving is atomic (``harness.core.atomic.atomic_open``); the sha256 of the file bytes is
returned on save and recorded on load, beside :func:`weights_sha256`, the hash of the weights alone
(the file's hash changes with its metadata, e.g. the wall time of an otherwise identical training). Models saved elsewhere are evaluated with
``--entry module:factory`` instead.

Memory is bounded too: :func:`_preflight` runs ``harness.core.torch_files.preflight`` before
``torch.load`` sees the file (zip format only; the legacy non-zip format is not read): no
compressed, duplicate or misplaced entries, entries that fit the file, a ``data.pkl`` of bounded
size whose every ``GLOBAL`` is one of the handful ``save_checkpoint`` writes. Refusals are one-line
``ValueError`` messages naming the file, which the CLI prints with exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.core.atomic import atomic_open
from harness.core.hashing import state_dict_sha256
from harness.core.torch_files import UNREADABLE, preflight

__all__ = ["FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "genbench.checkpoint/1"
_KEYS = ("format", "model", "config", "state_dict", "meta")
_FOREIGN_HINT = "to evaluate a model saved elsewhere, pass `--entry module:factory` (a function that builds and loads it)"
_UNREADABLE = UNREADABLE


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. ``state_dict`` tensors are on the CPU; ``sha256`` is of the file bytes,
    ``weights_sha256`` of the state dict alone (:func:`weights_sha256`)."""

    model_name: str
    config: dict[str, Any]
    state_dict: dict[str, Tensor]
    meta: dict[str, Any]
    sha256: str
    path: str
    training_state: dict[str, Any] | None = None
    weights_sha256: str = ""


def _json_copy(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A plain-JSON copy of ``value`` (tuples become lists), or a ValueError naming ``what``."""
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {what} must be JSON-serialisable (str keys, numbers, strings, lists, dicts): {err}") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 of the weights alone (``harness.core.hashing.state_dict_sha256``), not of the file."""
    return state_dict_sha256(state_dict)


def save_checkpoint(path: str | os.PathLike[str], *, model_name: str, config: Mapping[str, Any],
                    state_dict: Mapping[str, Tensor], meta: Mapping[str, Any],
                    training_state: Mapping[str, Any] | None = None) -> str:
    """Write a genbench checkpoint atomically; return the sha256 hex digest of the file.

    ``state_dict`` holds the weights to evaluate (the EMA weights where training keeps an EMA).
    ``training_state`` (optional) holds what resuming needs: optimizer state dicts, raw weights,
    step, RNG state; only tensors, numbers, strings, lists and dicts (weights_only-loadable).

    Raises:
        ValueError: config/meta not JSON-serialisable, or a state_dict value that is not a tensor.
    """
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"state_dict must map str names to tensors; bad entries: {bad[:5]}")
    payload = {"format": FORMAT, "model": str(model_name), "config": _json_copy(config, "config"),
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": _json_copy(meta, "meta")}
    if training_state is not None:
        payload["training_state"] = dict(training_state)
    target = Path(path)
    with atomic_open(target) as handle:
        torch.save(payload, handle)
    return _sha256(target)


def _preflight(path: Path) -> None:
    """``harness.core.torch_files.preflight`` for genbench checkpoints (zip format only)."""
    preflight(path, kind="genbench checkpoint", hint=_FOREIGN_HINT, allow_legacy=False)


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a message about ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" for plain pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needed = re.search(r"GLOBAL ([\w.]+)", str(err))
        if needed:  # the weights-only unpickler refused a class or function
            raise ValueError(
                f"{path} is not a genbench checkpoint: it needs the Python object {needed.group(1)}, so it may contain "
                f"arbitrary code, and genbench never unpickles code; {_FOREIGN_HINT}") from err
        reason = next((line for line in str(err).splitlines() if "Unsupported" in line), str(err)[:200])
        raise ValueError(f"{path} is not a readable torch file (corrupt or truncated, or not written by torch.save): "
                         f"{reason.strip()}") from err
    except Exception as err:  # torch reports corrupt/truncated zips as RuntimeError, EOFError, KeyError, ...
        raise ValueError(f"{path} is not a readable torch file (corrupt or truncated, or not written by torch.save): "
                         f"{type(err).__name__}: {str(err)[:200]}") from err


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load and validate a genbench checkpoint (CPU tensors, no code executed).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a torch zip file, corrupt or truncated; needs non-allowed pickle globals,
            or could take memory out of proportion to its size (:func:`_preflight`); a foreign
            torch file (e.g. a bare state dict); an unsupported format version.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    if not source.is_file():
        raise ValueError(f"checkpoint path {source} is not a file")
    _preflight(source)
    data = _read(source)
    if not isinstance(data, dict) or "format" not in data:
        found = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{source} is a torch file but not a genbench checkpoint (no 'format' key; found "
                         f"{found}); {_FOREIGN_HINT}")
    fmt = data["format"]
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("genbench.checkpoint/"):
            raise ValueError(f"{source} has checkpoint format {fmt!r}; this genbench reads {FORMAT!r}: "
                             "use the genbench version that wrote it, or upgrade")
        raise ValueError(f"{source} has format {fmt!r}, not a genbench checkpoint ({FORMAT!r}); {_FOREIGN_HINT}")
    missing = [k for k in _KEYS if k not in data]
    state = data.get("state_dict")
    if (missing or not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values())
            or not isinstance(data["config"], dict) or not isinstance(data["meta"], dict)):
        raise ValueError(f"{source} is a damaged genbench checkpoint: missing keys {missing}, or a state_dict that is "
                         "not name -> tensor, or a config/meta that is not a dict; re-save it with "
                         "harness.checkpoint.save_checkpoint")
    return Checkpoint(model_name=str(data["model"]), config=dict(data["config"]), state_dict=dict(state),
                      meta=dict(data["meta"]), sha256=_sha256(source), path=str(source),
                      training_state=data.get("training_state"), weights_sha256=weights_sha256(state))
