"""Shared test configuration: every test runs offline and away from the user's caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run: CI must not turn red by chance.
settings.register_profile("genbench", derandomize=True, deadline=None)
settings.load_profile("genbench")


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory):
    """Point every cache at a per-run temp dir, so nothing reads or writes ~/.cache."""
    root = tmp_path_factory.mktemp("caches")
    saved = {k: os.environ.get(k) for k in ("TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "GENBENCH_CACHE", "GENBENCH_OFFLINE", "GENBENCH_INCEPTION_WEIGHTS")}
    os.environ["TORCH_HOME"] = str(root / "torch")
    os.environ["HF_HOME"] = str(root / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GENBENCH_CACHE"] = str(root / "genbench")
    os.environ["GENBENCH_OFFLINE"] = "1"
    os.environ.pop("GENBENCH_INCEPTION_WEIGHTS", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def inception_weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded random FID-Inception weights (~96 MB), built once per session; see tests/inception_weights.py."""
    from inception_weights import make_random_inception_weights

    return make_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models on one intra-op thread (``pytestmark = usefixtures("one_thread")``).

    Their small matmuls and convolutions gain nothing from a second thread and lose a lot on a shared
    2-core machine (up to 30x measured); one thread also makes timings and float reductions steadier.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
