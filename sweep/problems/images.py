"""Real images, offline: scikit-learn's 8x8 digits by default, or local files.

``path`` is one of
  * ``builtin:digits`` - scikit-learn's bundled UCI digits (1797 images, 8x8, 10 classes);
  * an idx images file (``*-images-idx3-ubyte[.gz]``, MNIST's format; its labels are read
    from the ``*-labels-idx1-ubyte[.gz]`` beside it when present), or a directory holding
    such files (every ``*images-idx3-ubyte*`` in it is used, e.g. Fashion-MNIST's train and
    t10k as the Debian package ``dataset-fashion-mnist`` ships them in
    ``/usr/share/datasets/fashion-mnist``);
  * a ``.npy`` array (n, H, W) or (n, H * W) of images (no labels), or a ``.npz`` with
    ``images`` (or ``x``) and optional ``labels`` (or ``y``);
  * a directory of class folders of image files (``root/<class>/*.png``; Pillow).

Items are float32 rows (n, H * W), pixels scaled to [0, 1]. The images are split once into
train and test by class (``test_fraction``, a fixed split seed), then one class can be made a
minority: it keeps ``minority_share`` of each split, so that collapse erasing the tail is
measurable as the share of generated images of that class.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff"}


# --------------------------------------------------------------------------- loading
def read_idx(path: str | Path) -> np.ndarray:
    """An array from an idx file (MNIST's format: magic, dims, big-endian data; .gz ok)."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{p}: not an idx file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 0
    start = 4 + 4 * ndim
    if len(raw) - start < count * dtype.itemsize:
        raise ValueError(f"{p}: truncated idx file ({len(raw) - start} bytes for shape {tuple(dims)})")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(dims)


def _idx_labels_for(images_file: Path) -> Path | None:
    name = images_file.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    candidate = images_file.with_name(name)
    return candidate if name != images_file.name and candidate.is_file() else None


def load_images(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (n, H, W) float32 in [0, 1], labels (n,) int64 or None) from ``path``."""
    if path == "builtin:digits":
        return _digits()
    if path.startswith("builtin:"):
        raise ValueError(f"{path!r} is not built in (built in: builtin:digits)")
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix == ".npy":
            return _scale(np.load(p, allow_pickle=False)), None
        if p.suffix == ".npz":
            return _load_npz(p)
        if "idx" in p.name:
            return _load_idx([p])
        raise ValueError(f"{path!r}: unknown image file type (use .npy, .npz, idx files or a folder)")
    if p.is_dir():
        idx = sorted(q for q in p.iterdir() if "images-idx3" in q.name or "images.idx3" in q.name)
        if idx:
            return _load_idx(idx)
        return _load_folder(p)
    raise ValueError(f"image path not found: {path!r}")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, read from its data file as ``load_digits`` reads it,
    without importing scikit-learn (and SciPy): about 2.5 s of CPU per chain process."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("builtin:digits needs scikit-learn installed (pip install scikit-learn)")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(csv, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    images = data[:, :-1].reshape(-1, 8, 8)
    return (images / 16.0).astype(np.float32), data[:, -1].astype(np.int64)


def _scale(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 2:  # (n, D): square images
        side = int(round(np.sqrt(a.shape[1])))
        if side * side != a.shape[1]:
            raise ValueError(f"rows of {a.shape[1]} pixels are not square images; save (n, H, W)")
        a = a.reshape(len(a), side, side)
    if a.ndim != 3 or len(a) == 0:
        raise ValueError(f"images must have shape (n, H, W) or (n, H*W), got {a.shape}")
    a = a.astype(np.float32)
    if np.issubdtype(np.asarray(arr).dtype, np.integer) or a.max() > 1.5:
        a = a / 255.0  # 8-bit pixels
    return a


def _load_npz(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(p, allow_pickle=False) as z:
        key = next((k for k in ("images", "x", "X") if k in z), None)
        if key is None:
            raise ValueError(f"{p}: an .npz needs an 'images' (or 'x') array, has {sorted(z)}")
        images = _scale(z[key])
        lkey = next((k for k in ("labels", "y") if k in z), None)
        labels = None if lkey is None else np.asarray(z[lkey]).astype(np.int64).reshape(-1)
    return images, _check_labels(labels, len(images), p)


def _load_idx(files: list[Path]) -> tuple[np.ndarray, np.ndarray | None]:
    images, labels = [], []
    for f in files:
        x = read_idx(f)
        images.append(_scale(x))
        lf = _idx_labels_for(f)
        labels.append(None if lf is None else read_idx(lf).astype(np.int64).reshape(-1))
    out = np.concatenate(images)
    if any(lab is None for lab in labels):
        return out, None
    return out, _check_labels(np.concatenate(labels), len(out), files[0])


def _load_folder(root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no idx files and no class folders of images")
    images, labels = [], []
    for k, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in _IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("L"), dtype=np.uint8))
                labels.append(k)
    if not images:
        raise ValueError(f"{root}: class folders hold no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{root}: images differ in size {sorted(shapes)}; resize them to one size")
    return _scale(np.stack(images)), np.asarray(labels, dtype=np.int64)


def _check_labels(labels: np.ndarray | None, n: int, where: Path) -> np.ndarray | None:
    if labels is not None and len(labels) != n:
        raise ValueError(f"{where}: {len(labels)} labels for {n} images")
    return labels


# --------------------------------------------------------------------------- the source
class ImageSource:
    """Train/test splits of real images with an optional minority class.

    ``minority_class``: the label made rare (None keeps the data's own class shares);
    ``minority_share``: its share of each split. Majority images are all kept unless the
    minority class has too few images for that share, then the majority is subsampled.
    """

    def __init__(self, path: str = "builtin:digits", *, minority_class: int | None = 0,
                 minority_share: float = 0.05, test_fraction: float = 0.25,
                 max_images: int | None = None, split_seed: int = 0) -> None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        images, labels = load_images(path)
        self.shape = tuple(images.shape[1:])
        rng = np.random.default_rng(split_seed)
        if max_images is not None and len(images) > max_images:
            keep = np.sort(rng.choice(len(images), size=max_images, replace=False))
            images, labels = images[keep], None if labels is None else labels[keep]
        flat = images.reshape(len(images), -1)
        if labels is None:
            if minority_class is not None:
                raise ValueError(f"{path!r} has no labels, so no minority class; set "
                                 "minority_class to null")
            order = rng.permutation(len(flat))
            n_test = max(1, round(test_fraction * len(flat)))
            self._split = {"test": (flat[order[:n_test]], None), "train": (flat[order[n_test:]], None)}
            self.classes: np.ndarray | None = None
        else:
            self.classes = np.unique(labels)
            if minority_class is not None and minority_class not in self.classes:
                raise ValueError(f"minority_class {minority_class} is not a label of {path!r} "
                                 f"(labels: {', '.join(map(str, self.classes))})")
            if minority_class is not None and not 0 < minority_share < 1:
                raise ValueError(f"minority_share must lie in (0, 1), got {minority_share}")
            test_idx, train_idx = [], []
            for k in self.classes:  # stratified split: each class in both halves
                idx = rng.permutation(np.flatnonzero(labels == k))
                n_test = max(1, round(test_fraction * len(idx))) if len(idx) > 1 else 0
                test_idx.append(idx[:n_test])
                train_idx.append(idx[n_test:])
            self._split = {}
            for name, parts in (("train", train_idx), ("test", test_idx)):
                idx = np.concatenate(parts)
                if minority_class is not None:
                    idx = _imbalance(idx, labels, minority_class, minority_share, rng)
                idx = np.sort(idx)
                self._split[name] = (flat[idx], labels[idx])
        self.minority_class = minority_class
        if len(self._split["train"][0]) < 2 or len(self._split["test"][0]) < 2:
            raise ValueError(f"{path!r}: too few images for a train and a test split")

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def train(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(images, labels) of the training split."""
        return self._split["train"]

    def test(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(images, labels) of the held-out split."""
        return self._split["test"]

    def class_shares(self) -> np.ndarray | None:
        """True share of each class (index = position in ``classes``), from the test split."""
        labels = self._split["test"][1]
        if labels is None:
            return None
        return np.array([(labels == k).mean() for k in self.classes])

    def sample_real(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n training images drawn at random (without replacement while there are enough)."""
        x = self._split["train"][0]
        idx = rng.choice(len(x), size=n, replace=n > len(x))
        return x[idx].copy()


def _imbalance(idx: np.ndarray, labels: np.ndarray, minority: int, share: float,
               rng: np.random.Generator) -> np.ndarray:
    """Subsample ``idx`` so that class ``minority`` makes up ``share`` of it."""
    minor = idx[labels[idx] == minority]
    major = idx[labels[idx] != minority]
    n_minor = round(share / (1 - share) * len(major))
    if n_minor > len(minor):  # not enough minority images: shrink the majority instead
        n_minor = len(minor)
        major = rng.choice(major, size=max(1, round(n_minor * (1 - share) / share)), replace=False)
    return np.concatenate([major, rng.choice(minor, size=max(1, n_minor), replace=False)])
