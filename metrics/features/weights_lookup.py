"""Find, fetch and fingerprint the FID Inception-v3 weights (torch-fidelity's state-dict format).

Resolution order (first hit wins):

1. an explicit path (``weights_path=`` / CLI ``--inception-weights FILE``);
2. the environment variable ``GENBENCH_INCEPTION_WEIGHTS``;
3. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``, so
   ``TORCH_HOME`` defaults to ``~/.cache/torch``), under torch-fidelity's file name
   ``weights-inception-2015-12-05-6726825d.pth`` or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
   (the same state-dict keys; both load strictly into torch-fidelity's network);
4. a download of torch-fidelity's release file into that cache, only when not offline
   (offline: ``offline=True``, or ``GENBENCH_OFFLINE`` / ``HF_HUB_OFFLINE`` set to 1/true/yes/on).

Otherwise :class:`WeightsNotFoundError` says what is missing and the three ways to provide it.
A path given by (1) or (2) that does not exist is an error too; it never falls through to (3).

``inception-v3-pytorch-fid`` (:func:`resolve_pytorch_fid_weights`) follows the same order with
its own file only: ``weights_path=``, ``GENBENCH_PYTORCH_FID_WEIGHTS``, ``pt_inception-2015-12-05-6726825d.pth``
in the hub cache (where pytorch-fid itself caches it), a download of pytorch-fid's release file
when not offline; the not-found message is one line.

Content check. We do not know the official file's full sha256. Torch hub's convention is that
the hex in a file name (``-6726825d.pth``) is the prefix of the file's sha256, so
:data:`OFFICIAL_SHA256_PREFIX` is the check we can make. Decision: the prefix is **enforced
only on files we download** (a mismatch deletes the file and raises), exactly as
``torch.hub.download_url_to_file(hash_prefix=...)`` does. Files found under the official names
in the cache are hashed and recorded but not rejected -- torch hub itself never re-checks cached
files, and stand-in weights (e.g. the seeded random weights of the test suite) live there under
that name. A cached file whose hash does not match gets a warning, and
``ResolvedWeights.matches_official_prefix`` (recorded in the extractor protocol) is False, so a
result computed with it can never pass for one made with the official weights. Explicit and
environment paths are hashed and recorded, never rejected.

Hashes are computed in 1 MiB chunks and cached by (real path, size, mtime_ns), in memory and in
``$GENBENCH_CACHE/sha256-index.json`` (default ``~/.cache/genbench``), so repeated runs do not
re-read the ~100 MB file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.hub

logger = logging.getLogger(__name__)

OFFICIAL_FILE_NAME = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
OFFICIAL_SHA256_PREFIX = "6726825d"
# Same string as torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3 (a test checks it);
# copied so that resolving weights never imports torch-fidelity.
OFFICIAL_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
ENV_WEIGHTS = "GENBENCH_INCEPTION_WEIGHTS"
# pytorch-fid's own file (pytorch_fid.inception.FID_WEIGHTS_URL; a test checks it), for inception-v3-pytorch-fid.
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
ENV_PYTORCH_FID_WEIGHTS = "GENBENCH_PYTORCH_FID_WEIGHTS"
OFFLINE_ENV_VARS = ("GENBENCH_OFFLINE", "HF_HUB_OFFLINE")

_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}
_hash_memo: dict[tuple[str, int, int], str] = {}


class WeightsNotFoundError(FileNotFoundError):
    """The Inception weights are not on this machine and may not (or could not) be downloaded."""


class WeightsHashError(RuntimeError):
    """A downloaded weights file does not have the expected sha256 prefix (the file was deleted)."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the weights came from and what they are.

    ``source`` is one of ``"explicit"``, ``"env"``, ``"hub-cache"``, ``"download"``;
    ``sha256`` is the full hex digest of the file; ``matches_official_prefix`` tells whether it
    starts with :data:`OFFICIAL_SHA256_PREFIX`.
    """

    path: Path
    source: str
    sha256: str

    @property
    def matches_official_prefix(self) -> bool:
        return self.sha256.startswith(OFFICIAL_SHA256_PREFIX)


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether any of ``GENBENCH_OFFLINE`` / ``HF_HUB_OFFLINE`` is truthy."""
    if offline is not None:
        return offline
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in OFFLINE_ENV_VARS)


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch hub (and so torch-fidelity) computes it."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_inception_weights(weights_path: str | os.PathLike[str] | None = None, *, offline: bool | None = None) -> ResolvedWeights:
    """Locate (or, when allowed, download) the FID Inception weights; see the module docstring."""
    return resolve_weights(TORCH_FIDELITY_WEIGHTS, weights_path, offline=offline)


def resolve_pytorch_fid_weights(weights_path: str | os.PathLike[str] | None = None, *, offline: bool | None = None) -> ResolvedWeights:
    """pytorch-fid's own weights file, :data:`PYTORCH_FID_FILE_NAME`: same order as the module docstring,
    with ``GENBENCH_PYTORCH_FID_WEIGHTS``, only that name in the hub cache (where pytorch-fid's
    ``load_state_dict_from_url`` keeps it) and a download from :data:`PYTORCH_FID_URL`."""
    return resolve_weights(PYTORCH_FID_WEIGHTS, weights_path, offline=offline)


def resolve_weights(spec: WeightsSpec, weights_path: str | os.PathLike[str] | None = None, *, offline: bool | None = None) -> ResolvedWeights:
    """Resolve ``spec``'s weights: explicit path, its environment variable, its hub-cache names, a download."""
    if weights_path is not None:
        return _given(spec, Path(weights_path), "explicit", spec.option_hint)
    env_value = os.environ.get(spec.env_var, "").strip()
    if env_value:
        return _given(spec, Path(env_value), "env", f"the environment variable {spec.env_var}")
    cache = hub_checkpoints_dir()
    candidates = [cache / name for name in spec.file_names]
    for candidate in candidates:
        if candidate.is_file():
            resolved = ResolvedWeights(candidate, "hub-cache", sha256_file(candidate))
            if not resolved.matches_official_prefix:
                logger.warning(
                    "Inception weights %s have sha256 %s, which does not start with %s: these are not the "
                    "official weights, so FID/KID/IS computed with them are not comparable to published numbers.",
                    candidate, resolved.sha256, OFFICIAL_SHA256_PREFIX,
                )
            return resolved
    if is_offline(offline):
        raise WeightsNotFoundError(
            spec.not_found(candidates, "downloading is disabled (offline=True, GENBENCH_OFFLINE=1 or HF_HUB_OFFLINE=1)")
        )
    return _download(spec, candidates[0], candidates)


def sha256_file(path: Path) -> str:
    """Full sha256 hex digest of ``path``, read in 1 MiB chunks; memoised by (realpath, size, mtime_ns)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key in _hash_memo:
        return _hash_memo[key]
    index_key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    index = _read_index()
    digest = index.get(index_key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(real, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        index[index_key] = digest
        _write_index(index)
    _hash_memo[key] = digest
    return digest


def _given(spec: WeightsSpec, path: Path, source: str, how: str) -> ResolvedWeights:
    path = path.expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Inception weights file {str(path)!r}, given by {how}, does not exist (or is not a file). "
            f"Fix the path, or unset it to use the cache ($TORCH_HOME/hub/checkpoints/{spec.file_names[0]})."
        )
    return ResolvedWeights(path, source, sha256_file(path))


def _download(spec: WeightsSpec, destination: Path, searched: list[Path]) -> ResolvedWeights:
    url, prefix = spec.url, spec.sha256_prefix
    logger.info("downloading Inception weights %s -> %s", url, destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes to a temporary file, checks the sha256 prefix and only then moves it into place;
        # on a mismatch it deletes the temporary file and raises RuntimeError.
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=prefix, progress=True)
    except RuntimeError as err:
        if "invalid hash value" in str(err):
            raise WeightsHashError(
                f"downloaded {url} but its sha256 does not start with {prefix} ({err}); "
                f"the file was deleted. Retry, or fetch it by hand and pass it with {spec.option_hint}."
            ) from err
        raise
    except OSError as err:
        raise WeightsNotFoundError(spec.not_found(searched, f"the download failed ({err})")) from err
    return ResolvedWeights(destination, "download", sha256_file(destination))


def _not_found_message(searched: list[Path], *, reason: str) -> str:
    looked = ", ".join(str(p) for p in searched)
    return (
        f"Inception-v3 FID weights not found, and {reason}.\n"
        f"Needed: {OFFICIAL_FILE_NAME} (torch-fidelity's port of TF inception-2015-12-05). Its sha256 is expected "
        f"to start with {OFFICIAL_SHA256_PREFIX}: by torch hub convention the hex in the file name is the sha256 "
        "prefix; the full hash is not recorded here. pytorch-fid's "
        f"{PYTORCH_FID_FILE_NAME} has the same format and is accepted too.\n"
        f"Looked in: {looked}.\n"
        "Provide it in one of three ways:\n"
        "  1. --inception-weights FILE (Python: weights_path=FILE)\n"
        f"  2. export {ENV_WEIGHTS}=FILE\n"
        f"  3. copy it to $TORCH_HOME/hub/checkpoints/{OFFICIAL_FILE_NAME} (here: {searched[0]})\n"
        f"On a machine with network access, fetch it from {OFFICIAL_URL}"
    )


def _pytorch_fid_not_found_message(searched: list[Path], reason: str) -> str:
    """One line: the file, what is known of its sha256, where we looked and the ways to provide it."""
    return (
        f"pytorch-fid Inception weights {PYTORCH_FID_FILE_NAME} not found ({reason}; looked in "
        f"{', '.join(str(p) for p in searched)}); its sha256 should start with {OFFICIAL_SHA256_PREFIX} (the full hash "
        f"is not recorded here). Provide it with weights_path=FILE, export {ENV_PYTORCH_FID_WEIGHTS}=FILE, "
        f"or copy it to {searched[0]}; with network access fetch it from {PYTORCH_FID_URL}"
    )


@dataclass(frozen=True)
class WeightsSpec:
    """What :func:`resolve_weights` looks for: hub-cache names (the first is the download target),
    environment variable, download URL and sha256 prefix, and the not-found message."""

    file_names: tuple[str, ...]
    env_var: str
    url: str
    sha256_prefix: str
    option_hint: str
    not_found: Callable[[list[Path], str], str]


TORCH_FIDELITY_WEIGHTS = WeightsSpec(
    (OFFICIAL_FILE_NAME, PYTORCH_FID_FILE_NAME), ENV_WEIGHTS, OFFICIAL_URL, OFFICIAL_SHA256_PREFIX,
    "the weights_path option / --inception-weights", lambda searched, reason: _not_found_message(searched, reason=reason),
)
PYTORCH_FID_WEIGHTS = WeightsSpec(
    (PYTORCH_FID_FILE_NAME,), ENV_PYTORCH_FID_WEIGHTS, PYTORCH_FID_URL, OFFICIAL_SHA256_PREFIX,
    "the weights_path option", _pytorch_fid_not_found_message,
)


def _index_path() -> Path:
    root = os.environ.get("GENBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genbench")
    return Path(root) / "sha256-index.json"


def _read_index() -> dict[str, str]:
    path = _index_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable hash index %s (%s); it will be rewritten", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(index: dict[str, str]) -> None:
    path = _index_path()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(index, f, indent=0, sort_keys=True)
        os.replace(tmp, path)  # atomic: concurrent readers see the old or the new index
    except OSError as err:  # a read-only cache only costs speed
        logger.warning("could not write hash index %s: %s", path, err)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
