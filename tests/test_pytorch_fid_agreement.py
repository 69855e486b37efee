"""inception-v3-pytorch-fid against the pytorch-fid package (0.3.0) on identical weights and images.

The weights are seeded random ones in pytorch-fid's own file format (tests/inception_weights.py),
so the numbers are self-consistent only. pytorch-fid reads the same images from PNG files through
its own loader (PIL ``convert("RGB")``, ``ToTensor``); one set is grey, so the channel convention
is checked too. Inception-v3 at 299x299 runs ~4 img/s on one core, hence N = 20 per set;
pytorch-fid's scipy sqrtm at d = 2048 adds ~20 s on one core.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics.features import FeatureExtractor, get_feature_extractor
from metrics.features.weights_lookup import (
    ENV_PYTORCH_FID_WEIGHTS,
    OFFICIAL_SHA256_PREFIX,
    PYTORCH_FID_FILE_NAME,
    PYTORCH_FID_URL,
    WeightsNotFoundError,
)
from metrics.fid import fid_of_rows

pytestmark = pytest.mark.usefixtures("one_thread")

N = 20  # images per set
BATCH = 10  # ours and pytorch-fid's, so both run identical batches


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inception_weights import make_random_pytorch_fid_weights

    return make_random_pytorch_fid_weights(tmp_path_factory.mktemp("pytorch-fid") / PYTORCH_FID_FILE_NAME)


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """``{"gen": RGB smooth blobs, "real": grey ones}``, each uint8 [N, C, 32, 32] and its PNG files (grey: mode L)."""
    from inception_weights import smooth_blobs
    from PIL import Image

    grey = smooth_blobs(N, seed=2).float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    sets = {"gen": smooth_blobs(N, seed=1), "real": grey}
    out = {}
    for name, images in sets.items():
        folder = tmp_path_factory.mktemp(name)
        files = []
        for i, image in enumerate(images):
            array = image.permute(1, 2, 0).numpy()
            files.append(str(folder / f"{i:04d}.png"))
            Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(files[-1])
        out[name] = (images, files)
    return out


def test_matches_pytorch_fid_features_and_fid(weights: Path, image_sets: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytorch_fid import fid_score
    from pytorch_fid import inception as pf

    def load_our_file(url: str, progress: bool = True) -> dict[str, torch.Tensor]:
        assert url == pf.FID_WEIGHTS_URL == PYTORCH_FID_URL and url.endswith(weights.name)
        return torch.load(weights, map_location="cpu", weights_only=True)

    monkeypatch.setattr(pf, "load_state_dict_from_url", load_our_file)
    reference = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    extractor = get_feature_extractor("inception-v3-pytorch-fid", weights_path=weights)

    ours, theirs, stats = {}, {}, {}
    for name, (images, files) in image_sets.items():
        ours[name] = torch.cat([extractor(images[i : i + BATCH])["features"] for i in range(0, N, BATCH)]).double().numpy()
        theirs[name] = fid_score.get_activations(files, reference, batch_size=BATCH, dims=2048, device="cpu", num_workers=0)
        # pytorch-fid's calculate_activation_statistics, on the activations above:
        stats[name] = (np.mean(theirs[name], axis=0), np.cov(theirs[name], rowvar=False))
    fid_ours = fid_of_rows(ours["gen"], ours["real"])  # what the fid metric runs on feature rows
    fid_theirs = fid_score.calculate_frechet_distance(*stats["gen"], *stats["real"])
    max_diff = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)
    relative = abs(fid_ours - fid_theirs) / abs(fid_theirs)
    print(f"max |feature diff| {max_diff:.3g} (features ~{ours['gen'].std():.3g}); FID ours {fid_ours} pytorch-fid "
          f"{fid_theirs}, relative diff {relative:.3g}")
    assert max_diff <= 1e-5
    assert fid_theirs > 1 and relative <= 1e-4
    protocol = extractor.protocol()
    assert protocol["channels"] == "gray-repeated-to-rgb+rgb"
    assert protocol["weights_file"] == PYTORCH_FID_FILE_NAME and protocol["weights_source"] == "explicit"
    assert protocol["resize"] == "pytorch-fid bilinear, align_corners=False, no antialias"
    assert len(protocol["weights_sha256"]) == 64 and protocol["weights_match_official_sha256_prefix"] is False
    assert isinstance(extractor, FeatureExtractor) and extractor.num_classes is None


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_weights_from_hub_cache_and_env(weights: Path, empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metrics.features.weights_lookup import resolve_pytorch_fid_weights

    empty_torch_home.mkdir(parents=True)
    os.symlink(weights, empty_torch_home / PYTORCH_FID_FILE_NAME)  # where pytorch-fid's own download lands
    resolved = resolve_pytorch_fid_weights()
    assert resolved.source == "hub-cache" and resolved.path == empty_torch_home / PYTORCH_FID_FILE_NAME
    monkeypatch.setenv(ENV_PYTORCH_FID_WEIGHTS, str(weights))
    assert resolve_pytorch_fid_weights().source == "env"


def test_missing_weights_is_one_line_naming_the_file_and_the_ways(empty_torch_home: Path) -> None:
    # Offline (conftest sets GENBENCH_OFFLINE=1): nothing is downloaded and nothing is written.
    with pytest.raises(WeightsNotFoundError) as info:
        get_feature_extractor("inception-v3-pytorch-fid")
    message = str(info.value)
    assert "\n" not in message, message
    for needle in (PYTORCH_FID_FILE_NAME, OFFICIAL_SHA256_PREFIX, "weights_path=FILE", ENV_PYTORCH_FID_WEIGHTS,
                   str(empty_torch_home / PYTORCH_FID_FILE_NAME), PYTORCH_FID_URL):
        assert needle in message, needle
    assert not empty_torch_home.exists()


def test_missing_weights_in_the_cli_is_one_line_and_writes_nothing(empty_torch_home: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from harness.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "record.json"
    code = main(["eval-samples", "--samples", str(folder), "--reference", str(folder), "--feature-extractor",
                 "inception-v3-pytorch-fid", "--metrics", "fid", "--replicates", "0", "--no-cache", "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and PYTORCH_FID_FILE_NAME in err and err.count("\n") == 1, err
    assert not out.exists() and not empty_torch_home.exists()
