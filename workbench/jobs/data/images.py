"""Labelled image datasets as tensors in [-1, 1], shape (N, C, H, W).

- digits: scikit-learn's real 8x8 handwritten digits (embedded; 1797 images), optionally resized.
- mnist, fashion_mnist, cifar10: a local .npz (x_train/y_train/x_test/y_test) when a path is
  given, else torchvision's copy in the cache directory, downloaded on first use when online.
- imagefolder: one subfolder per class; a seeded split holds out the test images.

Offline without the data, loading fails with a DataError that says how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir
from torch.nn import functional as F

from workbench.jobs.data.names import CLASS_NAMES, ImageDatasetName

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class DataError(RuntimeError):
    """The data cannot be loaded; the message says how to provide it."""


@dataclass
class ImageData:
    name: str
    x_train: torch.Tensor  # float32 in [-1, 1], (N, C, H, W)
    y_train: torch.Tensor  # int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """Identifies the data (source and test set), so cached models trained on it are reused only for it."""
        import hashlib

        h = hashlib.sha256(f"{self.name}{self.shape}{len(self.x_train)}".encode())
        h.update(self.x_test.numpy().tobytes())
        h.update(self.y_test.numpy().tobytes())
        return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA") or user_cache_dir("workbench")) / "datasets"


def load_images(
    name: ImageDatasetName,
    path: str | None = None,
    image_size: int | None = None,
    n_train: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageData:
    """Load `name` (from `path` where given, else `$WORKBENCH_DATA/<name>.npz` where there is one, else
    torchvision's download cache), resize to image_size, keep the first n_train train images."""
    if name == "digits":
        data = _digits()
    elif name == "imagefolder":
        if not path:
            raise DataError("imagefolder needs data.path: a folder with one subfolder of images per class")
        data = _image_folder(Path(path).expanduser(), test_fraction, seed)
    elif path:
        data = _npz(name, Path(path).expanduser())
    elif (local := cache_dir().parent / f"{name}.npz").is_file():  # a lab's copy: $WORKBENCH_DATA/mnist.npz
        data = _npz(name, local)
    else:
        data = _torchvision(name)
    if image_size and image_size != data.shape[-1]:
        data.x_train, data.x_test = _resize(data.x_train, image_size), _resize(data.x_test, image_size)
    if n_train:
        data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
    return data


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(
        -1, 1
    )


def _to_tensor(x: np.ndarray, scale: float) -> torch.Tensor:
    """uint8-style (N, H, W) or (N, H, W, C) arrays -> float (N, C, H, W) in [-1, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x / scale * 2 - 1))


def _digits() -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # A fixed stratified split: the test set (and so every cached reference classifier) never moves.
    x_tr, x_te, y_tr, y_te = train_test_split(
        d.images, d.target, test_size=297, stratify=d.target, random_state=0
    )
    return ImageData(
        "digits",
        _to_tensor(x_tr, 16.0),
        torch.from_numpy(y_tr).long(),
        _to_tensor(x_te, 16.0),
        torch.from_numpy(y_te).long(),
        CLASS_NAMES["digits"],
    )


def _npz(name: str, path: Path) -> ImageData:
    if not path.is_file():
        raise DataError(f"{path}: no such .npz file (it needs arrays x_train, y_train, x_test, y_test)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as e:
        raise DataError(
            f"{path}: missing array {e.args[0]} (needs x_train, y_train, x_test, y_test)"
        ) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    scale = 255.0 if arrays["x_train"].max() > 1.5 else 1.0
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64).reshape(-1))
    n_classes = int(max(y_train.max(), arrays["y_test"].max())) + 1
    return ImageData(
        name,
        _to_tensor(arrays["x_train"], scale),
        y_train,
        _to_tensor(arrays["x_test"], scale),
        torch.from_numpy(arrays["y_test"].astype(np.int64).reshape(-1)),
        CLASS_NAMES.get(name, [str(i) for i in range(n_classes)])[:n_classes],
    )


def _torchvision(name: str) -> ImageData:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    root = cache_dir() / name
    try:
        train, test = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - offline: URLError, RuntimeError, OSError ...
        raise DataError(
            f"{name}: not in the cache ({root}) and the download failed ({type(e).__name__}: {e}). "
            f"Run once on a machine with internet (the cache dir is $WORKBENCH_DATA), put {name}.npz in $WORKBENCH_DATA, or set data.path to a "
            f".npz file with x_train, y_train, x_test, y_test"
        ) from None

    def arrays(ds):
        x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        return _to_tensor(x, 255.0), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    (x_tr, y_tr), (x_te, y_te) = arrays(train), arrays(test)
    return ImageData(name, x_tr, y_tr, x_te, y_te, CLASS_NAMES[name])


def _image_folder(root: Path, test_fraction: float, seed: int) -> ImageData:
    from PIL import Image

    if not root.is_dir():
        raise DataError(f"{root}: not a folder (imagefolder wants one subfolder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((root / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(classes) < 1 or len(files) < 2:
        raise DataError(
            f"{root}: found {len(classes)} class folders and {len(files)} images; "
            "imagefolder wants one subfolder of images per class"
        )
    images, labels, size, mode = [], [], None, None
    for f, label in files:
        try:
            with Image.open(f) as im:
                mode = mode or ("L" if im.mode in ("L", "1", "I;16") else "RGB")
                im = im.convert(mode)
                size = size or im.size
                images.append(np.asarray(im.resize(size) if im.size != size else im))
        except OSError as e:
            raise DataError(f"{f}: not a readable image ({e})") from None
        labels.append(label)
    x, y = _to_tensor(np.stack(images), 255.0), torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return ImageData("imagefolder", x[train], y[train], x[test], y[test], classes)
