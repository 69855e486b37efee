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

Memory is bounded too. ``weights_only`` stops code, not size: its allow-list includes callables that
build objects far larger than the file (``_codecs.encode(x, "hex")`` doubles ``x``, so ~34 nested calls
in a 1.7 KB file ask for ~24 GB; ``bytearray(n)``, ``torch.FloatTensor(n)`` and
``torch.UntypedStorage(n)`` allocate ``n`` elements), and torch inflates deflate-compressed zip
entries. Those callables cannot be given a budget from outside torch, so :func:`_preflight` checks the
file before ``torch.load`` sees it:

* it must be a zip archive (``torch.save``'s format since torch 1.6; the legacy non-zip format is not
  read) with no compressed, duplicate or misplaced entries, and entries whose sizes add up to no more
  than the file. torch checks each tensor's storage against its entry's size, so tensor data costs at
  most the file size;
* its ``data.pkl`` must be at most :data:`_MAX_PICKLE_BYTES` (genbench's is a few KB: tensor data
  lives in other entries) and is walked opcode by opcode (:func:`pickletools.genops`) before it is
  run: every ``GLOBAL`` must be one of :func:`_safe_globals`, the handful that ``save_checkpoint``
  writes (``OrderedDict``, ``_rebuild_tensor_v2``, the storage types) and other size-neutral ones. The
  weights-only unpickler accepts no other way of naming a global (no ``STACK_GLOBAL``, ``INST``), so
  the scan sees everything it can call.

What is left is pickle's linear overhead (tens of bytes of Python objects per opcode of
``data.pkl``). Refusals are one-line ``ValueError`` messages naming the file, which the CLI prints
with exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.core.atomic import atomic_open
from harness.core.hashing import state_dict_sha256

__all__ = ["FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "genbench.checkpoint/1"
_KEYS = ("format", "model", "config", "state_dict", "meta")
_FOREIGN_HINT = "to evaluate a model saved elsewhere, pass `--entry module:factory` (a function that builds and loads it)"
_UNREADABLE = "is not a readable torch file (corrupt or truncated, or not written by torch.save)"
_MiB = 1 << 20
_MAX_PICKLE_BYTES = 64 * _MiB
# allowed by torch's weights-only unpickler, but able to allocate memory out of proportion to the file
_AMPLIFIERS = {
    "_codecs.encode": "nested calls multiply their input; the 'hex' codec doubles it at each level",
    "builtins.bytearray": "bytearray(n) allocates n bytes",
    "torch.storage.UntypedStorage": "it allocates a storage of any size the pickle asks for",
    "torch.storage.TypedStorage": "it allocates a storage of any size the pickle asks for",
}


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


class _Refused(ValueError):
    """A checkpoint refused by :func:`_check_globals` (as opposed to bytes pickletools cannot parse)."""


def _safe_globals() -> frozenset[str]:
    """The pickle globals a genbench checkpoint may name: what torch.save writes for tensors and
    dicts (and Parameters, Size, device, dtypes, set, complex), none of which allocates more than
    its arguments. Names are checked as written, before Python 2 renames (Python 3 names are never
    renamed), which is also how torch's weights-only unpickler looks them up."""
    names = {"collections.OrderedDict", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
             "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
             "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Size", "torch.device",
             "builtins.set", "builtins.complex"}
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            names.add(f"torch.{name}")  # e.g. torch.float32
        elif isinstance(value, type) and name.endswith("Storage") and name not in ("TypedStorage", "UntypedStorage"):
            names.add(f"torch.{name}")  # torch.FloatStorage ...: placeholders in persistent ids, never called
    return frozenset(names)


def _check_globals(path: Path, pickle_bytes: bytes, what: str) -> None:
    """Walk ``pickle_bytes`` (up to its STOP) and refuse any GLOBAL outside :func:`_safe_globals`.

    Raises _Refused for a refused global, and lets pickletools' ValueError through for bytes that
    are not one well-formed pickle.
    """
    safe = _safe_globals()
    for opcode, _, pos in pickletools.genops(pickle_bytes):
        if opcode.name != "GLOBAL":
            continue
        # the two lines after the opcode, decoded as torch's unpickler decodes them
        module, name = (part.decode("utf-8", "replace") for part in pickle_bytes[pos + 1:].split(b"\n", 2)[:2])
        full = f"{module}.{name}"
        if full in safe:
            continue
        if full in _AMPLIFIERS or (module == "torch" and name.endswith("Tensor")):
            reason = _AMPLIFIERS.get(full, "it allocates a tensor of any size the pickle asks for")
            raise _Refused(f"{path} is refused: its {what} uses {full}, which genbench checkpoints never contain and "
                       f"which can build objects far larger than the file: {reason}")
        raise _Refused(f"{path} is not a genbench checkpoint: it needs the Python object {full}, so it may contain "
                       f"arbitrary code, and genbench never unpickles code; {_FOREIGN_HINT}")


def _preflight(path: Path) -> None:
    """Refuse, before torch.load, a file whose loading could take memory out of proportion to its size.

    Raises:
        ValueError: not a zip archive; compressed, duplicate or oversized entries; no or an
            oversized data.pkl; a data.pkl that is not a pickle or names a global outside
            :func:`_safe_globals`.
    """
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        if size <= _MAX_PICKLE_BYTES:  # a bare pickle: name the global it needs, if any, as torch would
            try:
                _check_globals(path, path.read_bytes(), "pickle")
            except _Refused:
                raise
            except ValueError:
                pass  # not a pickle either
        raise ValueError(f"{path} {_UNREADABLE}: not a zip archive (genbench checkpoints are torch.save zip files; "
                         "the legacy non-zip format is not read)")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            names = [e.filename for e in entries]
            # torch's zip reader (miniz) finds entries case-insensitively, under the first entry's folder
            if not entries or len({n.lower() for n in names}) != len(names):
                raise ValueError(f"{path} {_UNREADABLE}: its zip archive is empty or has duplicate entries")
            compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise ValueError(f"{path} is refused: zip entry {compressed[0]} is compressed (torch.save never "
                                 "compresses, and a compressed entry can inflate to far more than the file)")
            if min(e.header_offset for e in entries) != 0 or sum(e.file_size for e in entries) > size:
                raise ValueError(f"{path} {_UNREADABLE}: its zip entries do not fit the file "
                                 f"({sum(e.file_size for e in entries)} bytes declared in a {size}-byte file)")
            wanted = f"{names[0].split('/', 1)[0]}/data.pkl"
            pkl = next((e for e in entries if e.filename.lower() == wanted.lower()), None)
            if pkl is None:
                raise ValueError(f"{path} {_UNREADABLE}: its zip archive has no {wanted}")
            if pkl.file_size > _MAX_PICKLE_BYTES:
                raise ValueError(f"{path} is refused: its {pkl.filename} is {pkl.file_size / _MiB:.0f} MiB; a genbench "
                                 f"checkpoint keeps tensor data outside it and needs far less than "
                                 f"{_MAX_PICKLE_BYTES // _MiB} MiB")
            pickle_bytes = archive.read(pkl)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} {_UNREADABLE}: {type(err).__name__}: {str(err)[:200]}") from err
    try:
        _check_globals(path, pickle_bytes, pkl.filename)
    except _Refused:
        raise
    except ValueError as err:
        raise ValueError(f"{path} {_UNREADABLE}: its {pkl.filename} is not a pickle ({str(err)[:200]})") from err


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
