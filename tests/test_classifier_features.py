"""mnist-cnn / fashion-mnist-cnn feature extractors: committed weights, accuracy, input handling,
and bit-identical reproducibility of the training script."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.datasets import load_dataset
from metrics.features import FEATURES, FeatureExtractor
from metrics.features.classifier import (
    FEATURE_DIM,
    NUM_CLASSES,
    SPECS,
    WEIGHTS_DIR,
    ClassifierFeatures,
    mnist_cnn,
)
from harness.train_classifier import TrainConfig, main, save_weights, train

ACCURACY_MARGIN = 0.015  # measured accuracy may fall at most this far below the documented one
FASHION_TEST_IMAGES = 2000


@pytest.fixture(scope="module")
def extractor() -> ClassifierFeatures:
    return mnist_cnn()


@pytest.fixture(scope="module")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("mnist5k-test")
    return torch.from_numpy(data.x), torch.from_numpy(data.labels)


def _accuracy(model: FeatureExtractor, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(x)["logits"].argmax(dim=1) == labels).float().mean())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_weights_match_sidecar_and_load_weights_only(name: str) -> None:
    path = WEIGHTS_DIR / f"{name}.pt"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sidecar["sha256"]
    assert len(data) < 1_000_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert sidecar["command"] == SPECS[name].train_command
    assert sidecar["dataset"] == SPECS[name].train_dataset


@pytest.mark.parametrize("name", sorted(SPECS))
def test_registered_factories_build_feature_extractors(name: str) -> None:
    model = FEATURES.get(name)(device=torch.device("cpu"))
    assert isinstance(model, FeatureExtractor)
    assert (model.name, model.input_kind, model.feature_dim, model.num_classes) == (name, "image", FEATURE_DIM, NUM_CLASSES)
    protocol = model.protocol()
    json.dumps(protocol)
    assert protocol["weights_sha256"] == json.loads((WEIGHTS_DIR / f"{name}.json").read_text())["sha256"]
    assert "not FID" in protocol["label"]


def test_mnist_cnn_accuracy_on_mnist5k_test(extractor: ClassifierFeatures, mnist_test) -> None:
    x, labels = mnist_test
    documented = extractor.sidecar["eval_accuracy"]
    assert extractor.sidecar["eval_dataset"] == "mnist5k-test"
    assert _accuracy(extractor, x, labels) >= documented - ACCURACY_MARGIN


def test_fashion_mnist_cnn_accuracy() -> None:
    try:
        data = load_dataset("fashion-mnist-test")
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST files not installed: {err}")
    model = FEATURES.get("fashion-mnist-cnn")()
    x = torch.from_numpy(data.x[:FASHION_TEST_IMAGES])
    labels = torch.from_numpy(data.labels[:FASHION_TEST_IMAGES])
    assert _accuracy(model, x, labels) >= model.sidecar["eval_accuracy"] - ACCURACY_MARGIN


def test_features_shape_dtype_batch_independence_and_determinism(extractor: ClassifierFeatures, mnist_test) -> None:
    x = mnist_test[0][:50]
    out = extractor(x)
    assert out["features"].shape == (50, FEATURE_DIM) and out["logits"].shape == (50, NUM_CLASSES)
    assert out["features"].dtype == out["logits"].dtype == torch.float32
    assert out["features"].device.type == "cpu"
    assert (out["features"] < 0).any(), "features are taken before the ReLU"
    small_batches = mnist_cnn(batch_size=7)(x)
    for key in ("features", "logits"):
        torch.testing.assert_close(small_batches[key], out[key], atol=1e-5, rtol=0)
        assert torch.equal(extractor(x)[key], out[key])
    single = torch.cat([extractor(x[i : i + 1])["features"] for i in range(5)])
    torch.testing.assert_close(single, out["features"][:5], atol=1e-5, rtol=0)


def test_small_and_rgb_inputs_are_converted_and_recorded(mnist_test) -> None:
    model = mnist_cnn()
    assert model.protocol()["channels"] is None and model.protocol()["resized_from"] == []
    gray = mnist_test[0][:20]
    digits = torch.from_numpy(load_dataset("digits-test").x[:20])
    out8 = model(digits)
    assert out8["features"].shape == (20, FEATURE_DIM)
    assert model.protocol()["resized_from"] == [[8, 8]]
    assert model.protocol()["channels"] == "gray"
    rgb = model(gray.repeat(1, 3, 1, 1))  # equal channels: BT.601 weights sum to 1, so gray again
    torch.testing.assert_close(rgb["features"], model(gray)["features"], atol=1e-4, rtol=0)
    protocol = model.protocol()
    assert protocol["channels"] == "gray+rgb-to-gray-bt601"
    assert protocol["resize_detail"] == {"to": [28, 28], "mode": "bilinear", "antialias": True, "align_corners": False}


def test_bad_inputs_raise_clear_errors(extractor: ClassifierFeatures) -> None:
    with pytest.raises(TypeError, match="uint8"):
        extractor(torch.rand(2, 1, 28, 28))
    with pytest.raises(TypeError, match="torch.Tensor"):
        extractor([[0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        extractor(torch.zeros(2, 2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        extractor(torch.zeros(1, 28, 28, dtype=torch.uint8))


def test_tampered_weights_are_rejected_with_both_hashes_and_retrain_command(tmp_path: Path) -> None:
    path = tmp_path / "mnist-cnn.pt"
    shutil.copy(WEIGHTS_DIR / "mnist-cnn.pt", path)
    sidecar = json.loads((WEIGHTS_DIR / "mnist-cnn.json").read_text())
    sidecar["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="sha256") as err:
        mnist_cnn(weights_path=path)
    assert actual in str(err.value) and "0" * 64 in str(err.value)
    assert SPECS["mnist-cnn"].train_command in str(err.value)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="train_classifier"):
        mnist_cnn(weights_path=path)


def test_training_is_bit_identical_and_leaves_global_state_alone(mnist_test, tmp_path: Path) -> None:
    x, labels = (t[::2] for t in mnist_test)  # 500 images, 50 per class
    config = TrainConfig(seed=0, epochs=1)
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    first = train(x, labels, config, progress=False)
    second = train(x, labels, config, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other_seed = train(x, labels, TrainConfig(seed=1, epochs=1), progress=False)
    assert not torch.equal(first["fc2.weight"], other_seed["fc2.weight"])
    # Serialised bytes do not depend on the output file name (the sha256 in the sidecar is stable).
    a = save_weights(first, tmp_path / "a.pt", {"architecture": "x"})
    b = save_weights(second, tmp_path / "sub" / "b.pt", {"architecture": "x"})
    assert a["sha256"] == b["sha256"] == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.pt", "sub"]


def test_command_line_writes_loadable_weights_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "weights" / "tiny.pt"
    args = ["--dataset", "mnist5k-test", "--eval-dataset", "mnist5k-test", "--out", str(out), "--epochs", "0", "--no-progress"]
    assert main(args) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sidecar["dataset_content_hash"] == load_dataset("mnist5k-test").content_hash
    assert sidecar["command"] == "python -m harness.train_classifier " + " ".join(args)
    assert (sidecar["seed"], sidecar["epochs"], sidecar["optimizer"]["name"]) == (0, 0, "Adam")
    assert 0.0 <= sidecar["eval_accuracy"] <= 1.0 and sidecar["torch_version"] == torch.__version__
    assert mnist_cnn(weights_path=out)(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))["features"].shape == (1, FEATURE_DIM)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.json", "tiny.pt"]
