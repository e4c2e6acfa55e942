"""Image data sources (digits, idx, npy/npz, class folders) and the image metrics."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from sweep.problems.image_metrics import frechet_distance, image_metrics, train_extractor
from sweep.problems.images import ImageSource, load_images, read_idx

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, arr: np.ndarray) -> None:
    """MNIST's idx format: 0, 0, dtype code 0x08 (uint8), ndim, big-endian dims, data."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    blob = header + arr.tobytes()
    if path.suffix == ".gz":
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def tiny_images(n: int = 60, side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = (rng.random((n, side, side)) * 40 + labels[:, None, None] * 80).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_round_trip_with_labels(tmp_path, suffix):
    images, labels = tiny_images()
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels)
    assert np.array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    for path in (tmp_path, tmp_path / f"train-images-idx3-ubyte{suffix}"):  # folder or file
        x, y = load_images(str(path))
        assert x.shape == (60, 4, 4) and x.dtype == np.float32
        assert np.allclose(x, images / 255.0) and np.array_equal(y, labels)


def test_bad_idx_and_paths_are_one_line_errors(tmp_path):
    (tmp_path / "junk-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        load_images(str(tmp_path / "junk-images-idx3-ubyte"))
    with pytest.raises(ValueError, match="not found"):
        load_images(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="builtin:digits"):
        load_images("builtin:mnist")


def test_npy_npz_and_class_folders(tmp_path):
    from PIL import Image

    images, labels = tiny_images()
    np.save(tmp_path / "x.npy", images)
    x, y = load_images(str(tmp_path / "x.npy"))
    assert x.shape == (60, 4, 4) and y is None and x.max() <= 1
    np.savez(tmp_path / "d.npz", images=images.reshape(60, 16), labels=labels)
    x, y = load_images(str(tmp_path / "d.npz"))
    assert x.shape == (60, 4, 4) and np.array_equal(y, labels)
    root = tmp_path / "folders"
    for k in range(3):
        (root / f"class{k}").mkdir(parents=True)
    for i, (im, k) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(im).save(root / f"class{k}" / f"{i}.png")
    x, y = load_images(str(root))
    assert x.shape == (60, 4, 4) and sorted(np.bincount(y)) == [20, 20, 20]
    with pytest.raises(ValueError, match="no labels"):
        ImageSource(str(tmp_path / "x.npy"))  # a minority class needs labels
    src = ImageSource(str(tmp_path / "x.npy"), minority_class=None)
    assert src.dim == 16 and src.classes is None


def test_digits_minority_share_and_split():
    src = ImageSource("builtin:digits", minority_class=0, minority_share=0.05)
    (trx, tr_y), (tex, te_y) = src.train(), src.test()
    assert src.shape == (8, 8) and trx.shape[1] == 64 and 0 <= trx.min() and trx.max() <= 1
    for labels in (tr_y, te_y):
        assert abs((labels == 0).mean() - 0.05) < 0.005
        assert set(np.unique(labels)) == set(range(10))
    assert len(tex) / (len(tex) + len(trx)) == pytest.approx(0.25, abs=0.02)
    # Train and test are disjoint images.
    test_rows = {r.tobytes() for r in tex}
    assert sum(r.tobytes() in test_rows for r in trx) < 5  # a few digits are exact duplicates
    # Natural shares without a minority; a share the class cannot fill shrinks the majority.
    assert abs((ImageSource(minority_class=None).test()[1] == 0).mean() - 0.1) < 0.01
    big = ImageSource(minority_class=3, minority_share=0.5)
    assert abs((big.train()[1] == 3).mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match="minority_class 12"):
        ImageSource(minority_class=12)


def test_builtin_digits_are_scikit_learns_without_importing_it():
    """builtin:digits reads scikit-learn's data file itself (no sklearn / SciPy import in a
    chain process); the arrays are exactly load_digits' scaled to [0, 1]."""
    import subprocess
    import sys

    code = ("import sys; from sweep.problems.images import load_images; "
            "x, y = load_images('builtin:digits'); print(x.shape, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1797,", "8,", "8)", "False"]
    from sklearn.datasets import load_digits

    x, y = load_images("builtin:digits")
    d = load_digits()
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, (d.images / 16.0).astype(np.float32)) and np.array_equal(y, d.target)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package():
    src = ImageSource(str(FASHION), minority_class=9, minority_share=0.05, max_images=3000)
    assert src.shape == (28, 28) and set(src.classes) == set(range(10))
    assert abs((src.train()[1] == 9).mean() - 0.05) < 0.01


# --------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def digits():
    src = ImageSource()
    (trx, tr_y), (tex, te_y) = src.train(), src.test()
    return src, train_extractor(trx, tr_y, tex, te_y), tex, te_y


def test_extractor_classifies_real_digits(digits):
    _, ext, tex, te_y = digits
    assert ext.test_accuracy > 0.9


def test_frechet_distance_matches_the_closed_form():
    """FD between two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); for diagonal
    covariances the root is elementwise."""
    rng = np.random.default_rng(0)
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    a = rng.standard_normal((200_000, 3)) * np.sqrt(s1)
    b = rng.standard_normal((200_000, 3)) * np.sqrt(s2) + np.array([1.0, 0.0, -1.0])
    exact = 2.0 + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_metrics_separate_real_from_degraded_images(digits):
    src, ext, tex, te_y = digits
    rng = np.random.default_rng(1)
    real = src.sample_real(400, rng)
    kw = {"real_labels": te_y, "minority_class": 0}
    good = image_metrics(real, tex, ext, **kw)
    # Contracted towards the mean (less diverse, still typical): recall and diversity fall.
    blurred = image_metrics(0.5 * real + 0.5 * real.mean(0), tex, ext, **kw)
    # Off the manifold: precision falls, recall stays.
    noisy = image_metrics(real + 0.3 * rng.standard_normal(real.shape), tex, ext, **kw)
    no_minority = image_metrics(src.train()[0][src.train()[1] != 0][:400], tex, ext, **kw)
    one_mode = image_metrics(np.repeat(real[:5], 80, axis=0), tex, ext, **kw)
    assert good["precision"] > 0.8 and good["recall"] > 0.8
    for bad in (blurred, noisy, one_mode):
        assert good["fd"] < bad["fd"] - 3 * bad["fd_se"] - 3 * good["fd_se"]
    assert blurred["recall"] < 0.2 and blurred["diversity"] < 0.7 * good["diversity"]
    assert noisy["precision"] < good["precision"] - 0.3 and noisy["recall"] > 0.8
    assert one_mode["recall"] < 0.05 and one_mode["class_tv"] > 0.4
    assert abs(good["minority_share"] - 0.05) < 3 * good["minority_share_se"] + 0.01
    assert no_minority["minority_share"] < 0.01 and good["minority_truth"] == pytest.approx(0.05, abs=0.01)
    assert good["class_tv"] < no_minority["class_tv"] + 0.05
    for key in ("fd", "precision", "recall", "diversity", "minority_share", "class_tv"):
        assert np.isfinite(good[f"{key}_se"]) and good[f"{key}_se"] > 0
