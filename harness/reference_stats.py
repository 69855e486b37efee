"""Reference statistics files: genbench's own (``genbench ref``), and the formats users already have.

genbench's file is an ``.npz`` (written by :func:`write_reference`) with

* ``mu``: float64 [d], the mean of the reference set's features;
* ``sigma``: float64 [d, d], their unbiased covariance (ddof=1), both from the streamed fit
  (``metrics.fid.GaussianStats``) that ``eval-samples`` computes on the same rows;
* ``features`` (``genbench ref --features``): float32 [N, d], the feature rows, for KID, PRDC and
  every other metric that reads the reference's rows;
* ``genbench_manifest``: a 0-d unicode array holding JSON: the format and its version, the
  extractor's protocol (name, weights sha256, resize, ...), the data (spec, kind, shape, content
  hash, rows used and the rule that chose them), the row count, the sha256 of the arrays above,
  and the run that made it (versions, git sha, device, command line).

``mu`` and ``sigma`` keep pytorch-fid's names, so pytorch-fid, clean-fid and EDM read the file too.

Foreign formats carry no protocol (:func:`read_reference` tells them apart by content):

* an ``.npz`` with ``mu`` and ``sigma`` and no data array: pytorch-fid's ``--save-stats`` (deflated),
  clean-fid's stats (file names ``<name>_<mode>_<split>_<res>.npz``, whose ``<mode>`` is read as a
  resize hint), EDM's ``fid.py ref``, and ADM evaluator batches reduced to their statistics
  (``mu_s``/``sigma_s``, the spatial features, are not used);
* an EDM2 ``.pkl`` (``calculate_metrics.py ref``): ``{"num_images": N, "fid": {"mu", "sigma"},
  "fd_dinov2": {"mu", "sigma"}}``; the ``fid`` entry is read, ``fd_dinov2`` (DINOv2 ViT-L/14, an
  extractor genbench does not have) is not;
* a ``.pkl`` of ``{"mu": ..., "sigma": ...}``.

An ``.npz`` holding a data array (``arr_0``, ``x``, ``images``, ``samples``), e.g. an ADM reference
batch with its images, is an ordinary data set (``harness.datasets``), not a statistics file: its
features are computed by the run's own extractor.

Reading is bounded: ``.npz`` members are checked against their headers before any array is read
(``harness.datasets.npz.check_members``) and read without pickle; a ``.pkl`` is walked opcode by
opcode, then unpickled by ``harness.datasets.numpy_pickle.NumpyUnpickler``, which admits numpy
numeric arrays in plain containers and nothing that could run code.

Protocol: :func:`check_dimension` refuses statistics of another width than the run's features, and
:func:`check_protocol` compares the manifest's extractor protocol with the run's and
refuses a difference, naming the fields. A foreign file records no protocol; it is accepted only for
an Inception-v3 run (:data:`INCEPTION_EXTRACTORS`) whose extractor and resize do not contradict the
file's name, of the same dimension, and only when the user says so (``--assume-reference-protocol``);
the record then says that the protocol is unknown and assumed, with the file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import arrays_sha256
from harness.core.atomic import atomic_open
from harness.datasets.npz import DAMAGED, DATA_KEYS, check_members
from harness.datasets.numpy_pickle import NumpyUnpickler, Refused, check_complete, resolve, text

FORMAT = "genbench-reference"
FORMAT_VERSION = 1
MANIFEST_KEY = "genbench_manifest"
PICKLE_SUFFIXES = (".pkl", ".pickle")
MAX_MANIFEST_CHARS = 1 << 20
MAX_PICKLE_ARRAYS = 64  # EDM2 writes 4 (mu, sigma of fid and of fd_dinov2)
INCEPTION_EXTRACTORS = ("inception-v3", "inception-v3-pytorch-fid")
"""The Inception-v3 pool3 extractors; foreign statistics files are statistics of such features by their format."""
SYMMETRY_RTOL = 1e-6
"""|sigma - sigma^T| may reach this fraction of max |sigma| (float rounding of X^T X in the writer)."""

# Protocol fields that say where the weights were found, which inputs were seen so far, or which
# library versions and device ran: not what the features are (the weights' sha256 stays in).
PROTOCOL_CONTEXT = frozenset({"weights_path", "weights_source", "weights_file", "weights_match_official_sha256_prefix",
                              "channels", "resized_from", "device", "versions", "label", "training.command"})
PROTOCOL_FIRST = ("name", "weights_sha256", "resize", "network", "features_layer", "input_size", "normalization")
"""The protocol fields a refusal names first (then the others, alphabetically)."""
# clean-fid's stats file names: <name>_<mode>_<split>_<res>.npz; the mode fixes the resize. Its
# legacy_pytorch mode (torch bilinear resize before its TF-ported network) is neither inception-v3
# resize, nor exactly pytorch-fid's network and scaling (inception-v3-pytorch-fid).
CLEANFID_MODE = re.compile(r"_(clean|legacy_tensorflow|legacy_pytorch)_")
CLEANFID_RESIZE = {"clean": "clean", "legacy_tensorflow": "tf-bilinear", "legacy_pytorch": None}

MAKE_HINT = "make a reference file with this run's settings: genbench ref DATA --out FILE.npz"


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """What a reference statistics file holds.

    Attributes:
        path: the file.
        sha256: hex sha256 of the file's bytes.
        format: ``"genbench-reference"``, ``"mu/sigma npz"``, ``"EDM2 pkl"`` or ``"mu/sigma pkl"``.
        mu: float64 [d], the reference features' mean.
        sigma: float64 [d, d], their covariance.
        features: float32 [N, d] feature rows, or None (statistics only).
        rows: N, the rows behind ``mu``/``sigma``, or None where the file does not say.
        manifest: the genbench manifest (JSON object), or None for a foreign file.
        ignored: what else the file holds and is not used, in words ("" when nothing).
        resize_hint: the resize its name implies (clean-fid's ``_clean_`` -> ``"clean"``), "" for a
            mode no genbench resize reproduces, None when the name says nothing.
    """

    path: Path
    sha256: str
    format: str
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    rows: int | None = None
    manifest: dict[str, Any] | None = None
    ignored: str = ""
    resize_hint: str | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @property
    def kind(self) -> str:
        """The data kind behind the statistics: the manifest's; foreign formats are of images."""
        return str(self.manifest["data"]["kind"]) if self.manifest is not None else "image"

    def describe(self, spec: str, protocol: str) -> dict[str, Any]:
        """The record's ``data.reference`` for this file; ``protocol`` from :func:`check_protocol`."""
        data = (self.manifest or {}).get("data") or {}
        rows = self.rows
        return {
            "spec": spec,
            "name": data.get("name", self.path.name),
            "kind": self.kind,
            "source": f"{self.path} ({self.format})",
            "content_hash": data.get("content_hash"),
            "shape": data.get("shape"),
            "selection": {"n_total": rows, "n_used": rows, "rule": "every row behind the reference file's statistics",
                          "file_selection": data.get("selection")},
            "reference_file": {
                "path": str(self.path.resolve()),
                "sha256": self.sha256,
                "format": self.format,
                "rows": rows,
                "feature_dim": self.dim,
                "holds_features": self.features is not None,
                "protocol": protocol,
                "manifest": self.manifest,
                "ignored": self.ignored,
                "uncertainty": ("half-sample replicates resample the reference's rows, which the file holds"
                                if self.features is not None else
                                "none: half-sample replicates resample the reference's rows, and the file holds "
                                "statistics only"),
            },
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _npz_members(path: Path) -> list[str] | None:
    """The array names of an .npz (None when it is not a readable zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError):
        return None


def is_reference_file(spec: str) -> bool:
    """Whether ``spec`` names a reference statistics file (rather than a data set): a ``.pkl``, or an
    ``.npz`` with a genbench manifest, or with ``mu`` and ``sigma`` and no data array."""
    path = Path(spec).expanduser()
    if not path.is_file():
        return False
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    if path.suffix.lower() != ".npz":
        return False
    names = _npz_members(path)
    if names is None:
        return False  # the data-set reader says what is wrong with it
    if MANIFEST_KEY in names:
        return True
    return not any(k in names for k in DATA_KEYS) and "mu" in names and "sigma" in names


def read_reference(spec: str) -> ReferenceStats:
    """Read a reference statistics file (any format of the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: damaged, hostile or malformed (one line naming the file and what is wrong).
    """
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _read_pickle(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: a reference statistics file is an .npz (genbench ref, pytorch-fid, clean-fid, EDM) "
                         "or a .pkl (EDM2); got another suffix")
    try:
        check_members(path)
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = {k: _read_array(archive, k, path) for k in ("mu", "sigma", "features", MANIFEST_KEY) if k in names}
    except DAMAGED as err:
        raise ValueError(f"{path}: damaged .npz archive ({type(err).__name__}: {str(err)[:200]}); make it again") from err
    if MANIFEST_KEY in arrays:
        return _genbench(path, arrays)
    missing = [k for k in ("mu", "sigma") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: no {' and '.join(missing)}; a statistics .npz holds mu [d] and sigma [d, d] "
                         f"(found {', '.join(names) or 'no arrays'})")
    mu, sigma = _gaussian(path, arrays["mu"], arrays["sigma"])
    extra = sorted(set(names) - {"mu", "sigma"})
    return ReferenceStats(path=path, sha256=file_sha256(path), format="mu/sigma npz", mu=mu, sigma=sigma,
                          ignored=f"arrays {', '.join(extra)}" if extra else "", resize_hint=_name_hint(path))


def _read_array(archive: Any, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:  # object arrays (need pickle) or a corrupt member
        raise ValueError(f"{path}[{key!r}]: cannot read array ({err}); reference files hold plain numeric arrays") from err


def _name_hint(path: Path) -> str | None:
    match = CLEANFID_MODE.search(path.name.lower())
    if match is None:
        return None
    resize = CLEANFID_RESIZE[match.group(1)]
    return "" if resize is None else resize


def _gaussian(path: Path, mu: Any, sigma: Any, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """mu [d] and sigma [d, d] as float64, checked: numeric, finite, sigma symmetric with a non-negative diagonal."""
    for name, a in (("mu", mu), ("sigma", sigma)):
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            got = f"{a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"{path}: {where}{name} is {got}, not a numeric array")
    if mu.ndim != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: {where}mu must be [d] and sigma [d, d]; got mu {list(mu.shape)} and sigma "
                         f"{list(sigma.shape)}")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: {where}mu or sigma holds NaN or Inf")
    scale = float(np.abs(sigma).max())
    asym = float(np.abs(sigma - sigma.T).max())
    if asym > SYMMETRY_RTOL * scale or float(np.diag(sigma).min()) < 0:
        raise ValueError(f"{path}: {where}sigma is not a covariance (asymmetry {asym:.3g} of max {scale:.3g}, "
                         f"smallest variance {float(np.diag(sigma).min()):.3g})")
    return mu, sigma


def _genbench(path: Path, arrays: dict[str, np.ndarray]) -> ReferenceStats:
    raw = arrays[MANIFEST_KEY]
    if raw.dtype.kind != "U" or raw.shape != () or raw.dtype.itemsize // 4 > MAX_MANIFEST_CHARS:
        raise ValueError(f"{path}: {MANIFEST_KEY} must be one JSON string of at most {MAX_MANIFEST_CHARS} characters; "
                         f"got {raw.dtype} {list(raw.shape)}")
    try:
        manifest = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: {MANIFEST_KEY} is not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: {MANIFEST_KEY} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: {FORMAT} version {manifest.get('format_version')!r}; this genbench reads version "
                         f"{FORMAT_VERSION}; make the file again with this genbench")
    for key, kind in (("extractor", dict), ("data", dict), ("rows", int), ("arrays_sha256", str)):
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise ValueError(f"{path}: the manifest lacks {key!r} ({kind.__name__}); make the file again with genbench ref")
    if manifest["data"].get("kind") not in ("image", "tabular"):
        raise ValueError(f"{path}: the manifest's data kind is {manifest['data'].get('kind')!r}, not image or tabular")
    missing = [k for k in ("mu", "sigma") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: a {FORMAT} file without {' and '.join(missing)}; make it again with genbench ref")
    payload = {k: arrays[k] for k in ("mu", "sigma", "features") if k in arrays}
    if arrays_sha256(payload) != manifest["arrays_sha256"]:
        raise ValueError(f"{path}: its arrays do not match the sha256 its manifest records (altered after genbench "
                         "ref wrote it); make it again with genbench ref")
    mu, sigma = _gaussian(path, arrays["mu"], arrays["sigma"])
    features = arrays.get("features")
    if features is not None and (features.dtype != np.float32 or features.shape != (manifest["rows"], mu.shape[0])):
        raise ValueError(f"{path}: features are {features.dtype} {list(features.shape)}, expected float32 "
                         f"[{manifest['rows']}, {mu.shape[0]}] (rows x mu's dimension)")
    return ReferenceStats(path=path, sha256=file_sha256(path), format=FORMAT, mu=mu, sigma=sigma, features=features,
                          rows=manifest["rows"], manifest=manifest)


class _StatsUnpickler(NumpyUnpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(data, encoding="bytes", max_arrays=MAX_PICKLE_ARRAYS, what="a statistics pickle")

    def refuse(self, module: str, name: str) -> Any:
        raise Refused(f"refusing to load {module}.{name}: it could run code, and a statistics pickle holds only "
                      "numpy arrays in dicts")


def _keys_as_text(value: Any) -> Any:
    return {text(k): _keys_as_text(v) for k, v in value.items()} if isinstance(value, dict) else value


def _read_pickle(path: Path) -> ReferenceStats:
    data = path.read_bytes()
    layout = "expected a dict with mu [d] and sigma [d, d], or EDM2's {'fid': {'mu', 'sigma'}, ...}"
    try:
        check_complete(data)
    except ValueError as err:
        raise ValueError(f"{path}: not a statistics pickle (not one complete pickle: {str(err)[:200]}); {layout}") from err
    try:
        obj = _keys_as_text(resolve(_StatsUnpickler(data).load()))
    except Refused as err:
        raise ValueError(f"{path}: refused: {err}") from err
    except Exception as err:  # noqa: BLE001 -- any failure of a hostile or damaged pickle is "not a statistics file"
        raise ValueError(f"{path}: not a statistics pickle ({type(err).__name__}: {str(err)[:200]}); {layout}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}; {layout}")
    keys = ", ".join(sorted(map(str, obj))[:8])
    if isinstance(obj.get("fid"), dict):
        entry, fmt, where = obj["fid"], "EDM2 pkl", "['fid']."
        others = sorted(str(k) for k in obj if k not in ("fid", "num_images"))
        ignored = f"entries {', '.join(others)} (feature spaces genbench does not extract)" if others else ""
        rows = obj.get("num_images")
        rows = int(rows) if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool) and rows >= 2 else None
    elif "mu" in obj and "sigma" in obj:
        entry, fmt, where, rows = obj, "mu/sigma pkl", "", None
        ignored = ", ".join(sorted(str(k) for k in obj if k not in ("mu", "sigma")))
    elif obj and all(isinstance(v, dict) and "mu" in v for v in obj.values() if not isinstance(v, (int, np.integer))):
        raise ValueError(f"{path}: holds statistics for {keys} but none for 'fid' (Inception-v3); genbench has no "
                         f"extractor for the others; {MAKE_HINT}")
    else:
        raise ValueError(f"{path}: holds keys {keys or '(none)'}; {layout}")
    if "mu" not in entry or "sigma" not in entry:
        raise ValueError(f"{path}: {where.rstrip('.') or 'the dict'} lacks mu or sigma; {layout}")
    mu, sigma = _gaussian(path, entry["mu"], entry["sigma"], where)
    return ReferenceStats(path=path, sha256=file_sha256(path), format=fmt, mu=mu, sigma=sigma, rows=rows,
                          ignored=ignored, resize_hint=_name_hint(path))


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def defining_fields(protocol: dict[str, Any]) -> dict[str, Any]:
    """The fields of an extractor protocol that define the feature space (dotted paths; no :data:`PROTOCOL_CONTEXT`)."""
    return {k: v for k, v in _flatten(protocol).items()
            if k not in PROTOCOL_CONTEXT and k.split(".", 1)[0] not in PROTOCOL_CONTEXT}


def _short(value: Any) -> str:
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def check_dimension(ref: ReferenceStats, extractor: str, dim: int) -> None:
    """Refuse ``ref`` when its statistics are not ``dim``-dimensional (the run's extractor's width), naming both."""
    if ref.dim != dim:
        raise ValueError(f"{ref.path} holds {ref.dim:,}-d statistics ({ref.format}) but this run's feature extractor "
                         f"{extractor} gives {dim:,}-d features: they are different feature spaces; {MAKE_HINT}")


def check_protocol(ref: ReferenceStats, protocol: dict[str, Any], *, assume: bool) -> str:
    """Refuse ``ref`` unless its features are those the run's extractor (``protocol``) produces.

    Returns the record's description of how that is known. Raises ValueError naming the fields
    that differ, or (foreign files) what cannot be checked. The width is :func:`check_dimension`'s.
    """
    name = protocol.get("name")
    if ref.manifest is not None:
        theirs, ours = defining_fields(ref.manifest["extractor"]), defining_fields(protocol)
        differ = sorted((k for k in set(theirs) | set(ours) if theirs.get(k, "absent") != ours.get(k, "absent")),
                        key=lambda k: (PROTOCOL_FIRST.index(k) if k in PROTOCOL_FIRST else len(PROTOCOL_FIRST), k))
        if differ:
            detail = "; ".join(f"{k}: {_short(theirs.get(k, 'absent'))} in the file, {_short(ours.get(k, 'absent'))} "
                               "in this run" for k in differ[:6])
            more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
            raise ValueError(f"{ref.path} was made with another feature protocol than this run's: {detail}{more}; "
                             f"run with the file's settings, or {MAKE_HINT}")
        return "checked: the manifest's extractor protocol equals this run's (" + ", ".join(sorted(theirs)) + ")"
    if name not in INCEPTION_EXTRACTORS:
        raise ValueError(f"{ref.path} ({ref.format}) holds Inception-v3 statistics by its format, but this run's feature "
                         f"extractor is {name}; use --feature-extractor {' or '.join(INCEPTION_EXTRACTORS)}, or {MAKE_HINT}")
    run_resize = protocol.get("resize")
    if ref.resize_hint == "":
        raise ValueError(f"{ref.path}: its name marks clean-fid's legacy_pytorch mode, which no genbench extractor "
                         f"reproduces exactly; {MAKE_HINT}")
    if ref.resize_hint is not None and (name, run_resize) != (INCEPTION_EXTRACTORS[0], ref.resize_hint):
        raise ValueError(f"{ref.path}: its name marks clean-fid statistics that genbench reproduces with "
                         f"--feature-extractor {INCEPTION_EXTRACTORS[0]} --resize {ref.resize_hint}, but this run uses "
                         f"{name} with resize {run_resize!r}; pass --resize {ref.resize_hint}")
    if not assume:
        raise ValueError(f"{ref.path} ({ref.format}) records no feature protocol (extractor, weights, resize), so "
                         f"genbench cannot check that it matches this run's ({name}, resize {run_resize}, weights sha256 "
                         f"{str(protocol.get('weights_sha256'))[:12]}...); if it does, pass --assume-reference-protocol "
                         f"(recorded as an assumption), or {MAKE_HINT}")
    hint = f"; its name agrees (clean-fid resize {ref.resize_hint})" if ref.resize_hint else ""
    return (f"unknown: the file records none; assumed to be this run's by --assume-reference-protocol "
            f"(file sha256 {ref.sha256}){hint}")


def write_reference(path: str | Path, *, mu: np.ndarray, sigma: np.ndarray, features: np.ndarray | None,
                    manifest: dict[str, Any]) -> Path:
    """Write a genbench reference file atomically (the manifest gains ``format``, its version and ``arrays_sha256``).

    Args:
        mu: float64 [d]; sigma: float64 [d, d]; features: float32 [N, d] or None.
        manifest: JSON-able: ``extractor`` (the protocol), ``data`` (with ``kind``), ``rows`` (N).
    """
    arrays: dict[str, np.ndarray] = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
    if features is not None:
        arrays["features"] = np.asarray(features, np.float32)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "arrays_sha256": arrays_sha256(arrays)}
    text_json = json.dumps(full, sort_keys=True, allow_nan=False, default=str)
    if len(text_json) > MAX_MANIFEST_CHARS or not math.isfinite(float(arrays["sigma"].sum())):
        raise ValueError(f"cannot write {path}: the manifest exceeds {MAX_MANIFEST_CHARS} characters or sigma is not finite")
    with atomic_open(path) as handle:
        np.savez(handle, **arrays, **{MANIFEST_KEY: np.array(text_json)})
    return Path(path)
