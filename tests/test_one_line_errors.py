"""Anticipated failures end in a one-line error (exit 2) that names the file or option, not a traceback."""

import numpy as np
import pytest
import torch

from harness import cache
from harness.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_corrupt_and_truncated_images_name_the_file(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    good = (folder / "0.png").read_bytes()
    (folder / "5.png").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "6.png").write_bytes(b"not an image at all")  # not an image
    code, err = _run(capsys, "eval-samples", "--samples", str(folder), "--reference", str(folder),
                     "--feature-extractor", "mnist-cnn", "--replicates", "0", "--quiet")
    assert code == 2 and "not a readable image" in err and ("5.png" in err or "6.png" in err)
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("device", ["gpu", "cuda:99" if torch.cuda.is_available() else "cuda"])
def test_unusable_devices_are_refused_before_the_work(capsys, device):
    code, err = _run(capsys, "eval-samples", "--samples", "moons-test", "--reference", "moons-train",
                     "--num-samples", "50", "--device", device, "--quiet")
    assert code == 2 and f"--device {device}" in err.replace("'", "") and err.count("\n") == 1, err


def test_device_auto_is_cuda_then_mps_then_cpu_and_configs_hold_what_ran(monkeypatch):
    from harness.core import device as dev
    from harness.eval_samples import SampleEvalConfig
    from harness.runner import ModelEvalConfig
    from harness.train import TrainConfig

    for cfg in (SampleEvalConfig(samples="a", reference="b"), ModelEvalConfig(dataset="d", model="m"),
                TrainConfig(model="m", dataset="d", out="o.pt")):
        assert cfg.device == dev.auto_device()  # the default, resolved: a record names the device that ran
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.check_device("auto") == "cpu"
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.auto_device() == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.auto_device() == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert dev.check_device("cuda") == "cuda:3"  # under torchrun, this worker's GPU


def test_bad_inception_weights_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    code, err = _run(capsys, "eval-samples", "--samples", str(folder), "--reference", str(folder),
                     "--inception-weights", str(bad), "--metrics", "fid", "--replicates", "0", "--quiet")
    assert code == 2 and "weights.pth" in err and "Traceback" not in err, err


class _BadSampler:
    """A user model whose sample() returns something else than a [n, 2] tensor."""

    def __init__(self, kind: str) -> None:
        from harness.core.protocols import DataSpec

        self.kind, self.data_spec = kind, DataSpec((2,))

    def sample(self, n, rng):
        return {"numpy": np.zeros((n, 2), np.float32), "none": None, "short": torch.zeros(n - 2, 2),
                "complex": torch.zeros(n, 2, dtype=torch.complex64), "bool": torch.zeros(n, 2, dtype=torch.bool),
                "uint8": torch.zeros(n, 2, dtype=torch.uint8)}[self.kind]


def bad_sampler(kind: str) -> _BadSampler:
    return _BadSampler(kind)


@pytest.mark.parametrize("kind, words", [("numpy", "returned ndarray"), ("none", "returned NoneType"),
                                         ("short", "returned shape [48, 2]"), ("complex", "complex"),
                                         ("bool", "returned torch.bool for continuous data"),
                                         ("uint8", "returned torch.uint8 for continuous data")])
def test_wrong_sample_output_is_named(capsys, kind, words):
    code, err = _run(capsys, "eval", "--entry", f"{__name__}:bad_sampler", "--model-arg", f"kind={kind}",
                     "--dataset", "moons-test", "--num-samples", "50", "--metrics", "fid", "--replicates", "0", "--quiet")
    assert code == 2 and words in err and "_BadSampler.sample(50, rng)" in err, err


def test_empty_foreign_or_altered_cache_entries_are_recomputed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["eval-samples", "--samples", "moons-test", "--reference", "moons-train", "--num-samples", "60",
            "--metrics", "fid", "--replicates", "0", "--quiet"]
    assert main(argv) == 0
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    first = capsys.readouterr().out
    for damage in ("empty", "foreign", "altered"):
        if damage == "empty":
            entry.write_bytes(b"")
        elif damage == "foreign":
            np.savez(entry, something_else=np.zeros(3))
        else:
            main(argv)  # a good entry again, then change one feature value and keep its checksum
            with np.load(entry) as data:
                arrays = {k: data[k] for k in data.files}
            arrays["features"] = arrays["features"] + 1.0
            np.savez(entry, **arrays)
        capsys.readouterr()
        assert main(argv) == 0, damage
        assert capsys.readouterr().out.split("\n")[-2] == first.split("\n")[-2], damage  # the same FD line
        assert cache.load(entry.parent.name, entry.stem) is not None, damage  # replaced by a good entry


def test_memory_error_is_a_one_line_error(monkeypatch, capsys):
    import harness.eval_samples as es

    def boom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(es, "extract_features", boom)
    code, err = _run(capsys, "eval-samples", "--samples", "moons-test", "--reference", "moons-train",
                     "--num-samples", "50", "--no-cache", "--quiet")
    assert code == 2 and "out of memory" in err and err.count("\n") == 1


@pytest.mark.parametrize(("model", "arg", "words"), [
    ("vae", "hiden=3", ["Did you mean 'hidden'?", "'latent_dim'", "'beta'"]),  # a **config factory: its dataclass's fields
    ("affine-flow", "dimm=2", ["Did you mean 'dim'?", "Accepted keys: ['dim', 'seed', 'dtype']"]),
])
def test_an_unknown_model_argument_lists_the_keys_the_model_accepts(capsys, model, arg, words):
    code, err = _run(capsys, "eval", "--model", model, "--model-arg", arg, "--dataset", "moons-test", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "['config']" not in err, err
    assert all(w in err for w in words), err


def test_a_model_of_another_shape_than_the_data_is_refused_before_sampling(capsys):
    code, err = _run(capsys, "eval", "--model", "affine-flow", "--model-arg", "dim=3", "--dataset", "moons-test",
                     "--feature-extractor", "identity", "--num-samples", "50", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "'affine-flow' works on examples of shape (3,)" in err and "'moons-test' has examples of shape (2,)" in err


def test_resuming_another_models_checkpoint_names_both_models(tmp_path, capsys):
    ckpt = tmp_path / "v.pt"
    assert main(["train", "vae-2d", "--dataset", "moons-train", "--steps", "2", "--out", str(ckpt), "--quiet"]) == 0
    code, err = _run(capsys, "train", "rectified-flow", "--dataset", "moons-train", "--steps", "4", "--out",
                     str(tmp_path / "r.pt"), "--resume", str(ckpt), "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "trained with model 'vae-2d', not 'rectified-flow'" in err and "genbench train vae-2d" in err
    assert "cannot build" not in err


def test_a_requested_metric_short_of_rows_is_an_error_and_an_unrequested_one_is_skipped(tmp_path, capsys):
    import json

    args = ["eval", "--model", "affine-flow", "--model-arg", "dim=2", "--dataset", "moons-test",
            "--feature-extractor", "identity", "--num-samples", "5", "--replicates", "0", "--quiet"]
    code, err = _run(capsys, *args, "--metrics", "fid,prdc")
    assert code == 2 and err.count("\n") == 1 and "too few rows for prdc: it needs at least 6 rows per set, got 5" in err
    out = tmp_path / "r.json"
    code, err = _run(capsys, *args, "--json", str(out))
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["skipped"]["prdc"] == "needs at least 6 rows per set, got 5" and "fid" in record["metrics"]
