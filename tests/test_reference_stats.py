"""Reference statistics files: `genbench ref`, and `--reference` reading genbench's, pytorch-fid's,
clean-fid's, EDM's, EDM2's and ADM's files (each written here as its tool writes it)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness import eval_samples
from harness.cli import main
from harness.eval_samples import ReferenceConfig, SampleEvalConfig, evaluate_samples, make_reference
from harness.reference_stats import MANIFEST_KEY, check_dimension, check_protocol, is_reference_file, read_reference
from harness.store.records import read_record

REL = 1e-9


def _rows(tmp_path: Path, name: str, n: int, seed: int, *, shift: float = 0.0, dim: int = 3) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + shift
    path = tmp_path / f"{name}.npz"
    np.savez(path, x=x.astype(np.float32))
    return str(path)


def _digits(tmp_path: Path, name: str, rows: slice) -> str:
    from harness.datasets import load_dataset

    x = load_dataset("mnist5k-test").x[rows]
    path = tmp_path / f"{name}.npz"
    np.savez(path, arr_0=np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # ADM's layout: uint8 NHWC
    return str(path)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b), 1e-300)


def _eval(**kw: Any) -> dict[str, Any]:
    kw.setdefault("replicates", 0)
    kw.setdefault("use_cache", False)
    return evaluate_samples(SampleEvalConfig(**kw), progress=False)


# --------------------------------------------------------------------------- genbench's own file


def test_fid_from_a_reference_file_equals_fid_from_the_data(tmp_path, capsys):
    samples, data = _rows(tmp_path, "s", 300, 0, shift=0.3), _rows(tmp_path, "r", 400, 1)
    out = tmp_path / "ref.npz"
    assert main(["ref", data, "--num-samples", "250", "--seed", "4", "--out", str(out), "--quiet"]) == 0
    assert "statistics only" in capsys.readouterr().out
    with np.load(out) as f:  # pytorch-fid's names, float64
        assert f["mu"].dtype == f["sigma"].dtype == np.float64 and f["sigma"].shape == (3, 3)
        assert "features" not in f.files
    direct = _eval(samples=samples, reference=data, num_samples=250, seed=4, metrics=("fid",))
    rec = tmp_path / "rec.json"
    assert main(["eval-samples", "--samples", samples, "--reference", str(out), "--num-samples", "250", "--seed", "4",
                 "--json", str(rec), "--quiet", "--replicates", "0"]) == 0
    record = read_record(rec)
    assert _close(record["metrics"]["fid"]["value"], direct["metrics"]["fid"]["value"])
    assert record["metrics"]["fid"]["n_reference"] == 250
    ref = record["data"]["reference"]
    assert ref["reference_file"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert ref["reference_file"]["format"] == "genbench-reference"
    manifest = ref["reference_file"]["manifest"]
    assert manifest["rows"] == 250 and manifest["extractor"]["name"] == "identity"
    assert manifest["data"]["content_hash"] == direct["data"]["reference"]["content_hash"]
    assert manifest["data"]["selection"] == direct["data"]["reference"]["selection"]
    assert manifest["created"]["versions"]["numpy"] == np.__version__
    assert ref["reference_file"]["protocol"].startswith("checked")
    for name in ("kid", "prdc"):  # default metrics that read reference rows: skipped, with the way out
        assert record["skipped"][name] == (f"the reference file holds statistics only; {name} needs the reference's "
                                           "features (make the file with genbench ref --features)")


def test_a_file_with_features_gives_every_metric_as_the_data_does(tmp_path):
    samples, data = _rows(tmp_path, "s", 120, 0, shift=0.3), _rows(tmp_path, "r", 120, 1)
    out = tmp_path / "ref.npz"
    make_reference(ReferenceConfig(data=data, out=str(out), features=True, use_cache=False), progress=False)
    direct = _eval(samples=samples, reference=data, replicates=4)
    via_file = _eval(samples=samples, reference=str(out), replicates=4)
    assert set(via_file["metrics"]) == set(direct["metrics"]) and "kid_mean" in direct["metrics"]
    for key, entry in direct["metrics"].items():
        assert _close(via_file["metrics"][key]["value"], entry["value"]), key
        if "uncertainty" in entry:  # half-sample replicates resample the file's rows as they would the data's
            assert _close(via_file["metrics"][key]["uncertainty"]["std"], entry["uncertainty"]["std"]), key
    assert via_file["data"]["reference"]["reference_file"]["holds_features"] is True


def test_image_reference_file_with_a_feature_network(tmp_path):
    samples, data = _digits(tmp_path, "s", slice(0, 1000, 10)), _digits(tmp_path, "r", slice(1, 1000, 10))
    out = tmp_path / "digits-ref.npz"
    assert main(["ref", data, "--feature-extractor", "mnist-cnn", "--out", str(out), "--quiet", "--no-cache"]) == 0
    common = dict(samples=samples, feature_extractor="mnist-cnn", metrics=("fid",))
    direct = _eval(reference=data, **common)
    via_file = _eval(reference=str(out), **common)
    assert _close(via_file["metrics"]["fid"]["value"], direct["metrics"]["fid"]["value"])
    manifest = via_file["data"]["reference"]["reference_file"]["manifest"]
    assert manifest["extractor"]["weights_sha256"] == direct["features"]["weights_sha256"]
    assert manifest["data"]["kind"] == "image" and manifest["rows"] == 100


def test_requesting_a_row_metric_of_a_statistics_only_file_is_an_error(tmp_path, capsys):
    samples, data = _rows(tmp_path, "s", 50, 0), _rows(tmp_path, "r", 50, 1)
    out = tmp_path / "ref.npz"
    make_reference(ReferenceConfig(data=data, out=str(out), use_cache=False), progress=False)
    assert main(["eval-samples", "--samples", samples, "--reference", str(out), "--metrics", "fid,kid", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "kid" in err and "genbench ref --features" in err
    assert main(["eval-samples", "--samples", samples, "--reference", str(out), "--train", data, "--quiet"]) == 2
    assert "statistics only" in capsys.readouterr().err


def test_a_different_protocol_is_refused_with_the_fields_named(tmp_path, capsys):
    samples, data = _digits(tmp_path, "s", slice(0, 400, 10)), _digits(tmp_path, "r", slice(1, 400, 10))
    out = tmp_path / "ref.npz"
    make_reference(ReferenceConfig(data=data, out=str(out), feature_extractor="mnist-cnn", use_cache=False), progress=False)
    # both 128-d, different networks: the dimension alone would not tell
    assert main(["eval-samples", "--samples", samples, "--reference", str(out), "--feature-extractor",
                 "fashion-mnist-cnn", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another feature protocol" in err
    assert 'name: "mnist-cnn" in the file, "fashion-mnist-cnn" in this run; weights_sha256' in err


def test_rows_of_another_width_are_refused(tmp_path, capsys):
    out = tmp_path / "ref.npz"
    make_reference(ReferenceConfig(data=_rows(tmp_path, "r", 50, 1), out=str(out), use_cache=False), progress=False)
    assert main(["eval-samples", "--samples", _rows(tmp_path, "s", 50, 0, dim=4), "--reference", str(out), "--quiet"]) == 2
    assert "(4,)" in capsys.readouterr().err


def test_an_altered_file_is_refused(tmp_path):
    out = tmp_path / "ref.npz"
    make_reference(ReferenceConfig(data=_rows(tmp_path, "r", 50, 1), out=str(out), use_cache=False), progress=False)
    with np.load(out) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["mu"] = arrays["mu"] + 1.0
    np.savez(out, **arrays)
    with pytest.raises(ValueError, match="do not match the sha256 its manifest records"):
        read_reference(str(out))


def test_output_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(eval_samples, "load_dataset", lambda *a, **k: pytest.fail("loaded data before checking --out"))
    (tmp_path / "folder.npz").mkdir()
    assert main(["ref", "moons-test", "--out", str(tmp_path / "folder.npz"), "--quiet"]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["ref", "moons-test", "--out", str(tmp_path / "ref.json"), "--quiet"]) == 2
    assert ".npz" in capsys.readouterr().err


def test_eval_compares_samples_with_a_reference_file(tmp_path):
    from harness.runner import ModelEvalConfig, evaluate_model

    out = tmp_path / "moons.npz"
    make_reference(ReferenceConfig(data="moons-test", out=str(out), num_samples=300, use_cache=False), progress=False)
    common = dict(model="affine-flow", model_args={"dim": 2}, dataset="moons-test", num_samples=300, metrics=("fid",),
                  replicates=0, use_cache=False)
    direct = evaluate_model(ModelEvalConfig(**common), progress=False)
    via_file = evaluate_model(ModelEvalConfig(reference=str(out), **common), progress=False)
    assert _close(via_file["metrics"]["fid"]["value"], direct["metrics"]["fid"]["value"])
    assert via_file["data"]["reference"]["reference_file"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- foreign formats


class _StubInception:
    """Stands in for inception-v3 (whose CPU forward takes tens of seconds): 4x4 average pools of the
    grey image as 16 features. Foreign statistics are Inception statistics by their format, so the
    reader checks the extractor's name; the arithmetic under test does not depend on the network."""

    name = "inception-v3"
    input_kind = "image"
    feature_dim = 16
    num_classes = None

    def __init__(self, *, device: str = "cpu", resize: str = "tf-bilinear", weights_path: Any = None) -> None:
        self.resize = resize

    def protocol(self) -> dict[str, Any]:
        return {"name": self.name, "resize": self.resize, "weights_sha256": "0" * 64}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        grey = x.float().mean(dim=1, keepdim=True)
        return {"features": torch.nn.functional.adaptive_avg_pool2d(grey, 4).flatten(1)}


@pytest.fixture()
def stub_inception(monkeypatch):
    real = eval_samples.get_feature_extractor
    monkeypatch.setattr(eval_samples, "get_feature_extractor",
                        lambda name, **kw: _StubInception(**kw) if name == "inception-v3" else real(name, **kw))
    return _StubInception()


def _stats(images_npz: str) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma as pytorch-fid computes them (np.mean, np.cov with rowvar=False) of the stub's features."""
    with np.load(images_npz) as f:
        x = torch.from_numpy(np.ascontiguousarray(f["arr_0"].transpose(0, 3, 1, 2)))
    feats = _StubInception()(x)["features"].double().numpy()
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def _write_pytorch_fid(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez_compressed(path, mu=mu, sigma=sigma)  # pytorch_fid.fid_score.save_fid_stats


def _write_npz(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez(path, mu=mu, sigma=sigma)  # clean-fid's make_custom_stats, EDM's fid.py ref


def _write_adm_stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez(path, mu=mu, sigma=sigma, mu_s=mu[:4], sigma_s=sigma[:4, :4])  # ADM batch without arr_0


def _write_edm2(protocol: int):
    def write(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
        stats = {"num_images": 60, "fid": {"mu": mu, "sigma": sigma},
                 "fd_dinov2": {"mu": np.zeros(8), "sigma": np.eye(8)}}
        with path.open("wb") as f:  # calculate_metrics.py save_stats
            pickle.dump(stats, f, protocol=protocol)
    return write


def _write_pickle(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    with path.open("wb") as f:
        pickle.dump({"mu": mu, "sigma": sigma}, f, protocol=2)


FOREIGN = [
    ("pytorch-fid", "cifar10_train.npz", _write_pytorch_fid, "mu/sigma npz", None),
    ("clean-fid", "cifar10_legacy_tensorflow_train_32.npz", _write_npz, "mu/sigma npz", None),
    ("edm", "cifar10-32x32.npz", _write_npz, "mu/sigma npz", None),
    ("adm-stats", "VIRTUAL_imagenet64_labeled.npz", _write_adm_stats, "mu/sigma npz", None),
    ("edm2-p4", "img64.pkl", _write_edm2(4), "EDM2 pkl", 60),
    ("edm2-p5", "img512.pkl", _write_edm2(5), "EDM2 pkl", 60),
    ("mu-sigma-pkl", "stats.pkl", _write_pickle, "mu/sigma pkl", None),
]


@pytest.mark.parametrize(("fmt", "filename", "write", "label", "rows"), FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_statistics_give_fid_once_their_protocol_is_assumed(tmp_path, capsys, stub_inception, fmt, filename,
                                                                   write, label, rows):
    samples, data = _digits(tmp_path, "s", slice(0, 600, 10)), _digits(tmp_path, "r", slice(1, 600, 10))
    path = tmp_path / filename
    write(path, *_stats(data))
    assert is_reference_file(str(path))
    args = ["eval-samples", "--samples", samples, "--reference", str(path), "--quiet", "--replicates", "0"]
    assert main(args) == 2  # no protocol in the file: not used unless the user says it is the run's
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "records no feature protocol" in err and "--assume-reference-protocol" in err
    rec = tmp_path / "rec.json"
    assert main([*args, "--assume-reference-protocol", "--json", str(rec)]) == 0
    record = read_record(rec)
    direct = _eval(samples=samples, reference=data, metrics=("fid",))
    assert record["metrics"]["fid"]["label"] == "FID"
    assert _close(record["metrics"]["fid"]["value"], direct["metrics"]["fid"]["value"])
    assert record["metrics"]["fid"]["n_reference"] == rows
    info = record["data"]["reference"]["reference_file"]
    assert info["format"] == label and info["manifest"] is None and info["rows"] == rows
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["protocol"].startswith("unknown") and info["sha256"] in info["protocol"]
    assert set(record["skipped"]) >= {"kid", "prdc"}
    if fmt.startswith("edm2"):
        assert "fd_dinov2" in info["ignored"]


def test_clean_fid_names_that_contradict_the_resize_are_refused(tmp_path, stub_inception):
    mu, sigma = np.zeros(16), np.eye(16)
    protocol = stub_inception.protocol()  # resize tf-bilinear
    for name, match in (("cifar10_clean_train_32.npz", "pass --resize clean"),
                        ("cifar10_legacy_pytorch_train_32.npz", "legacy_pytorch")):
        np.savez(tmp_path / name, mu=mu, sigma=sigma)
        with pytest.raises(ValueError, match=match):
            check_protocol(read_reference(str(tmp_path / name)), protocol, assume=True)
    np.savez(tmp_path / "cifar10_clean_train_32.npz", mu=mu, sigma=sigma)
    assert check_protocol(read_reference(str(tmp_path / "cifar10_clean_train_32.npz")),
                          {**protocol, "resize": "clean"}, assume=True).startswith("unknown")


def test_a_feature_space_of_another_dimension_is_refused_naming_both(tmp_path):
    path = tmp_path / "img512.pkl"  # e.g. DINOv2's 1024-d statistics filed under 'fid'
    with path.open("wb") as f:
        pickle.dump({"num_images": 50000, "fid": {"mu": np.zeros(1024), "sigma": np.eye(1024)}}, f)
    with pytest.raises(ValueError, match=r"1,024-d statistics .* inception-v3 gives 2,048-d features"):
        check_dimension(read_reference(str(path)), "inception-v3", 2048)
    np.savez(tmp_path / "s.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="extractor is identity"):  # foreign statistics are Inception's
        check_protocol(read_reference(str(tmp_path / "s.npz")), {"name": "identity"}, assume=True)


def test_adm_reference_batches_with_images_are_an_ordinary_reference(tmp_path):
    images = _digits(tmp_path, "plain", slice(1, 600, 10))
    with np.load(images) as f:
        arr_0 = f["arr_0"]
    adm = tmp_path / "VIRTUAL_mnist_labeled.npz"  # evaluator.py's reference batch: images plus its own statistics
    np.savez(adm, arr_0=arr_0, mu=np.zeros(2048), sigma=np.eye(2048)[:1], mu_s=np.zeros(3), sigma_s=np.eye(3))
    assert not is_reference_file(str(adm))
    common = dict(samples=_digits(tmp_path, "s", slice(0, 600, 10)), feature_extractor="mnist-cnn", metrics=("fid", "kid"))
    via_adm, direct = _eval(reference=str(adm), **common), _eval(reference=images, **common)
    assert via_adm["metrics"]["fid"]["value"] == direct["metrics"]["fid"]["value"]  # the features are the run's own
    assert via_adm["metrics"]["kid_mean"]["value"] == direct["metrics"]["kid_mean"]["value"]
    assert via_adm["data"]["reference"]["content_hash"] == direct["data"]["reference"]["content_hash"]


# --------------------------------------------------------------------------- hostile files


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "stats.pkl"
    path.write_bytes(pickle.dumps({"mu": np.zeros(3), "sigma": _RunsCode(marker)}))
    with pytest.raises(ValueError, match=r"refusing to load (posix|nt)\.mkdir: it could run code") as info:
        read_reference(str(path))
    assert not marker.exists() and "\n" not in str(info.value)
    exe = tmp_path / "exec.pkl"
    exe.write_bytes(b"cbuiltins\nexec\n(Vopen('" + str(marker).encode() + b"', 'w')\ntR.")
    with pytest.raises(ValueError, match=r"refusing to load builtins\.exec"):
        read_reference(str(exe))
    assert not marker.exists()


def test_a_pickle_that_claims_more_than_it_holds_is_refused_fast(tmp_path):
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"x" * 16 + b".")  # BINBYTES8 of 1 TiB
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not one complete pickle"):
        read_reference(str(path))
    assert time.perf_counter() - start < 1.0


def test_object_arrays_and_malformed_statistics_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    with pytest.raises(ValueError, match="object"):  # never unpickled: its member is refused before reading
        read_reference(str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "asym.npz", mu=np.zeros(2), sigma=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="not a covariance"):
        read_reference(str(tmp_path / "asym.npz"))
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"mu must be \[d\] and sigma \[d, d\]"):
        read_reference(str(tmp_path / "shape.npz"))
    manifest = tmp_path / "manifest.npz"
    np.savez(manifest, mu=np.zeros(2), sigma=np.eye(2), **{MANIFEST_KEY: np.array(json.dumps({"format": "other"}))})
    with pytest.raises(ValueError, match="is not a genbench-reference manifest"):
        read_reference(str(manifest))
    dino = {"num_images": 5, "fd_dinov2": {"mu": np.zeros(2), "sigma": np.eye(2)}}
    (tmp_path / "dino.pkl").write_bytes(pickle.dumps(dino))
    with pytest.raises(ValueError, match="none for 'fid'"):
        read_reference(str(tmp_path / "dino.pkl"))
