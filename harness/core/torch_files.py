"""Checks a ``torch.save`` file passes before ``torch.load(weights_only=True)`` sees it.

``weights_only`` stops code, not size: its allow-list includes callables that build objects far
larger than the file (``_codecs.encode(x, "hex")`` doubles ``x``, so ~34 nested calls in a 1.7 KB
file ask for ~24 GB; ``bytearray(n)``, ``torch.FloatTensor(n)`` and ``torch.UntypedStorage(n)``
allocate ``n`` elements), torch inflates deflate-compressed zip entries, and the legacy (non-zip)
format allocates each storage at the size its pickle declares before reading any data. Those
cannot be given a budget from outside torch, so :func:`preflight` checks the file first:

* **zip format** (``torch.save``'s since torch 1.6): no compressed, duplicate or misplaced entries,
  entries whose sizes add up to no more than the file (torch checks each tensor's storage against
  its entry, so tensor data costs at most the file size), and a ``data.pkl`` of at most
  :data:`MAX_PICKLE_BYTES`;
* **legacy format** (where allowed): the leading pickles (magic, protocol, system info, the object,
  the storage keys) are each at most :data:`MAX_PICKLE_BYTES`, and the storages their persistent
  ids declare add up to no more than the file;
* every pickle is walked opcode by opcode (:func:`pickletools.genops`) before it is run: every
  ``GLOBAL`` must be one of :func:`safe_globals`, the handful that ``torch.save`` writes for tensors
  and dicts. The weights-only unpickler accepts no other way of naming a global (no
  ``STACK_GLOBAL``, ``INST``), so the walk sees everything it can call.

Refusals are one-line ``ValueError`` messages naming the file.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

import torch

MiB = 1 << 20
MAX_PICKLE_BYTES = 64 * MiB
UNREADABLE = "is not a readable torch file (corrupt or truncated, or not written by torch.save)"
# allowed by torch's weights-only unpickler, but able to allocate memory out of proportion to the file
AMPLIFIERS = {
    "_codecs.encode": "nested calls multiply their input; the 'hex' codec doubles it at each level",
    "builtins.bytearray": "bytearray(n) allocates n bytes",
    "torch.storage.UntypedStorage": "it allocates a storage of any size the pickle asks for",
    "torch.storage.TypedStorage": "it allocates a storage of any size the pickle asks for",
}
_LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, the storage keys
_INT_OPS = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"})
_MEMO_PUT = frozenset({"BINPUT", "LONG_BINPUT", "PUT"})
_MEMO_GET = frozenset({"BINGET", "LONG_BINGET", "GET"})


class Refused(ValueError):
    """A file refused for what its pickle names (as opposed to bytes pickletools cannot parse)."""


def safe_globals() -> frozenset[str]:
    """The pickle globals a state-dict file may name: what torch.save writes for tensors and dicts
    (and Parameters, Size, device, dtypes, set, complex), none of which allocates more than its
    arguments. Names are checked as written, before Python 2 renames (Python 3 names are never
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


def _global_name(pickle_bytes: bytes, pos: int) -> str:
    # the two lines after the GLOBAL opcode, decoded as torch's unpickler decodes them
    module, name = (part.decode("utf-8", "replace") for part in pickle_bytes[pos + 1:].split(b"\n", 2)[:2])
    return f"{module}.{name}"


def check_globals(path: Path, pickle_bytes: bytes, what: str, *, kind: str, hint: str) -> int:
    """Walk one pickle of ``pickle_bytes`` (up to its STOP) and refuse any GLOBAL outside :func:`safe_globals`.

    ``kind`` names the file in messages ("genbench checkpoint"), ``hint`` says what to do instead.
    Returns the offset just past the STOP. Raises :class:`Refused` for a refused global, and lets
    pickletools' ValueError through for bytes that are not one well-formed pickle.
    """
    safe = safe_globals()
    end = 0
    for opcode, _, pos in pickletools.genops(pickle_bytes):
        end = pos + 1
        if opcode.name != "GLOBAL":
            continue
        full = _global_name(pickle_bytes, pos)
        if full in safe:
            continue
        module, _, name = full.partition(".")
        if full in AMPLIFIERS or (module == "torch" and name.endswith("Tensor")):
            reason = AMPLIFIERS.get(full, "it allocates a tensor of any size the pickle asks for")
            raise Refused(f"{path} is refused: its {what} uses {full}, which {kind}s never contain and "
                          f"which can build objects far larger than the file: {reason}")
        raise Refused(f"{path} is not a {kind}: it needs the Python object {full}, so it may contain "
                      f"arbitrary code, and genbench never unpickles code; {hint}")
    return end


def _declared_storage_bytes(pickle_bytes: bytes) -> int:
    """Bytes of the storages the persistent ids of a legacy-format pickle declare.

    Each id is the tuple ``("storage", StorageType, key, location, numel, view)`` (torch's
    ``_legacy_load``): MARK, six pushes (literals, GLOBAL or memo gets), TUPLE, BINPERSID.
    """
    memo: dict[object, object] = {}
    stack: list[object] = []
    marks: list[int] = []
    total = 0
    for opcode, arg, pos in pickletools.genops(pickle_bytes):
        op = opcode.name
        if op == "MARK":
            marks.append(len(stack))
            continue
        if op in _MEMO_PUT:
            memo[arg] = stack[-1] if stack else None
            continue
        if op == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        if op == "TUPLE" and marks:
            start = marks.pop()
            stack[start:] = [tuple(stack[start:])]
            continue
        if op in ("BINPERSID", "PERSID"):
            pid = stack.pop() if stack else None
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
                storage_type, numel = pid[1], pid[4]
                if not isinstance(numel, int) or numel < 0:
                    raise ValueError(f"a storage id declares {numel!r} elements")
                dtype = getattr(torch, str(storage_type).rpartition(".")[2], None)
                element = getattr(getattr(dtype, "dtype", None), "itemsize", 8)
                total += numel * element
            stack.append(None)
            continue
        if op == "GLOBAL":
            stack.append(_global_name(pickle_bytes, pos))
        elif op in _MEMO_GET:
            stack.append(memo.get(arg))
        elif op in _INT_OPS or op in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                                      "BINSTRING", "SHORT_BINBYTES", "BINBYTES"):
            stack.append(arg)
        elif op in ("NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append(None)
        elif op in ("APPENDS", "SETITEMS", "DICT", "LIST") and marks:
            del stack[marks.pop():]
            if op in ("DICT", "LIST"):
                stack.append(None)
        # other opcodes only reshape objects the walk does not need; the stack is a best effort
        # whose only use is reading the ids' literal fields, which torch.save writes in place
    return total


def preflight(path: Path, *, kind: str, hint: str, allow_legacy: bool) -> None:
    """Refuse, before torch.load, a file whose loading could take memory out of proportion to its size.

    Raises:
        ValueError: (zip) compressed, duplicate or oversized entries, no or an oversized data.pkl;
            (legacy) not allowed, oversized pickles, or storages larger than the file; any pickle
            that is not one or names a global outside :func:`safe_globals`.
    """
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        _preflight_legacy(path, size, kind=kind, hint=hint, allow_legacy=allow_legacy)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            names = [e.filename for e in entries]
            # torch's zip reader (miniz) finds entries case-insensitively, under the first entry's folder
            if not entries or len({n.lower() for n in names}) != len(names):
                raise ValueError(f"{path} {UNREADABLE}: its zip archive is empty or has duplicate entries")
            compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise ValueError(f"{path} is refused: zip entry {compressed[0]} is compressed (torch.save never "
                                 "compresses, and a compressed entry can inflate to far more than the file)")
            if min(e.header_offset for e in entries) != 0 or sum(e.file_size for e in entries) > size:
                raise ValueError(f"{path} {UNREADABLE}: its zip entries do not fit the file "
                                 f"({sum(e.file_size for e in entries)} bytes declared in a {size}-byte file)")
            wanted = f"{names[0].split('/', 1)[0]}/data.pkl"
            pkl = next((e for e in entries if e.filename.lower() == wanted.lower()), None)
            if pkl is None:
                raise ValueError(f"{path} {UNREADABLE}: its zip archive has no {wanted}")
            if pkl.file_size > MAX_PICKLE_BYTES:
                raise ValueError(f"{path} is refused: its {pkl.filename} is {pkl.file_size / MiB:.0f} MiB; a {kind} "
                                 f"keeps tensor data outside it and needs far less than {MAX_PICKLE_BYTES // MiB} MiB")
            pickle_bytes = archive.read(pkl)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} {UNREADABLE}: {type(err).__name__}: {str(err)[:200]}") from err
    try:
        check_globals(path, pickle_bytes, pkl.filename, kind=kind, hint=hint)
    except Refused:
        raise
    except ValueError as err:
        raise ValueError(f"{path} {UNREADABLE}: its {pkl.filename} is not a pickle ({str(err)[:200]})") from err


def _preflight_legacy(path: Path, size: int, *, kind: str, hint: str, allow_legacy: bool) -> None:
    with path.open("rb") as handle:
        head = handle.read(_LEGACY_PICKLES * MAX_PICKLE_BYTES if allow_legacy else MAX_PICKLE_BYTES)
    offset, declared = 0, 0
    for i in range(_LEGACY_PICKLES if allow_legacy else 1):
        try:
            end = check_globals(path, head[offset:], "pickle", kind=kind, hint=hint)
            if i == 3:  # the object: its persistent ids declare the storages torch allocates
                declared = _declared_storage_bytes(head[offset:offset + end])
        except Refused:
            raise
        except ValueError as err:
            if not allow_legacy:
                break  # not a pickle either: say what the format must be, below
            raise ValueError(f"{path} {UNREADABLE}: pickle {i + 1} of the legacy format is not a pickle "
                             f"({str(err)[:200]})") from err
        offset += end
    if not allow_legacy:
        raise ValueError(f"{path} {UNREADABLE}: not a zip archive ({kind}s are torch.save zip files; "
                         "the legacy non-zip format is not read)")
    if declared > size:
        raise ValueError(f"{path} is refused: its storages declare {declared} bytes in a {size}-byte file, and torch's "
                         "legacy loader allocates them before reading; the file is damaged or hostile")
