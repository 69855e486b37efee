"""Run records: one JSON file per run, schema-versioned (``harness.store.schema``), written atomically.

A record carries what is needed to reproduce and to compare each number: the run (id, git sha,
library versions, device, wall time, command line), the data (spec, content hash, rows used), the
feature extractor's protocol, and per metric ``{"value": ..., protocol fields}``; metrics that
could not run are listed under ``skipped`` with the reason. Records are validated as
:class:`~harness.store.schema.Record` when written and when read; older schemas are migrated on
read.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from harness.core.atomic import write_json
from harness.core.distributed import describe_world
from harness.store.schema import SCHEMA, Record, migrate

__all__ = ["SCHEMA", "Record", "check_output_path", "migrate", "read_record", "run_info", "validate_record", "write_record"]

_VERSIONED = ("genbench", "torch", "torchvision", "numpy", "scipy", "torch-fidelity", "clean-fid")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the packages a number can depend on (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """The commit of the genbench checkout this code runs from, or None (installed, no git)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def torch_threads() -> int | None:
    """torch's intra-op thread count, or None when torch is not imported. Recorded because float
    reductions, and so trained weights, differ between thread counts: one mnist5k RealNVP recipe
    gave FD 491 on one thread and 589 on two."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def cpu_model() -> str:
    """The CPU's model name and widest vector extension (``/proc/cpuinfo`` on Linux, else
    ``platform.processor()``): trained models are reproducible bit for bit only on the same kind of
    CPU, since the vector width changes the rounding of float sums."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    vector = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    return ", ".join(filter(None, [name or platform.processor() or "unknown", vector]))


def run_info(*, device: str, wall_time_s: float, argv: list[str] | None = None) -> dict[str, Any]:
    """The ``run`` section of a record; under torchrun also ``distributed`` (world size, backend)."""
    info = {
        "id": uuid.uuid4().hex,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "versions": library_versions(),
        "device": device,
        "host": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch_threads()},
        "wall_time_s": round(wall_time_s, 3),
        "argv": list(sys.argv if argv is None else argv),
    }
    if (distributed := describe_world()) is not None:
        info["distributed"] = distributed
    return info


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder, a missing or
    non-folder parent. Returns the path."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; give a file name, e.g. {out / 'record.json'}")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"output {out} cannot be created: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK):
        raise ValueError(f"output {out} cannot be created: {probe} is not writable")
    return out


def write_record(path: str | os.PathLike[str], record: dict[str, Any] | Record) -> Path:
    """Validate the record (:class:`Record`) and write it atomically; returns the path."""
    obj = record.to_json() if isinstance(record, Record) else record
    validate_record(obj)
    check_output_path(path)
    write_json(path, obj)
    return Path(path)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read, migrate to the current schema and validate a record; errors name the file and what is wrong."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"record {path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"record {path} is not readable JSON: {err}") from None
    try:
        record = migrate(record) if isinstance(record, dict) else record
        validate_record(record)
    except ValueError as err:
        raise ValueError(f"record {path}: {err}") from None
    return record


def validate_record(record: Any) -> None:
    """Check a record in the current format (:class:`Record`); raise ValueError naming the first problem."""
    Record.from_json(record)
