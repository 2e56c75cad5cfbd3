"""Class-balanced synthetic image sets drawn from a class-conditional model, cached in the store.

A set is `per_class` images of each class, drawn with one sampler, step count and guidance scale from
seeded noise, its labels cycling through the classes (0, 1, ..., K-1, 0, 1, ...), so its first m * K
images hold exactly m of each class: a smaller ratio of synthetic to real images is a prefix of a larger
one. Images are kept as uint8 (as the real datasets are), under `cache/synthetic/` by a key naming the
generator (its weights or its training data and recipe), the sampler, the guidance and the seed; a later
run asking for that many images per class or fewer reads them (a prefix) instead of sampling, the
expensive part, again; one asking for more samples a larger set, which replaces the file. Files are
written aside and renamed: a crash leaves a whole set or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class SyntheticSet:
    x: torch.Tensor  # float32 in [-1, 1], (K * per_class, C, H, W)
    y: torch.Tensor  # int64, cycling through the classes
    cached: bool  # read from the cache, not sampled now
    seconds: float  # sampling time (0 when cached)


def set_key(*, generator: str, classes: list[int], sampler: dict, guidance: float, sampling_seed: int) -> str:
    """A synthetic set's cache key: what the images are a function of. `sampling_seed` is the seed handed
    to `generate` (one meaning for every kind, so two kinds drawing from one model share sets only when
    they drew the same images)."""
    parts = {
        "generator": generator,
        "classes": classes,
        "sampler": sampler,
        "guidance": guidance,
        "sampling_seed": sampling_seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_path(folder: Path, key: str) -> Path:
    """The set `key` in the cache folder (`ctx.cache_dir("synthetic")`)."""
    return Path(folder) / f"{key}.npz"


def cycling_labels(classes: list[int], per_class: int) -> torch.Tensor:
    """classes[0], classes[1], ..., classes[-1], classes[0], ...: per_class of each, any prefix of
    m * len(classes) balanced."""
    return torch.tensor(classes, dtype=torch.long).repeat(per_class)


def prefix(s: SyntheticSet, per_class: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first per_class images of each class."""
    n = per_class * num_classes
    return s.x[:n], s.y[:n]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def from_uint8(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float() / 127.5 - 1


def load(folder: Path, key: str, per_class: int, num_classes: int) -> SyntheticSet | None:
    """The first per_class images of each class of the cached set, if it has that many."""
    path = cache_path(folder, key)
    try:
        with np.load(path) as f:
            n = per_class * num_classes
            if len(f["y"]) < n:
                return None
            return SyntheticSet(from_uint8(f["x"][:n]), torch.from_numpy(f["y"][:n]).long(), True, 0.0)
    except (OSError, KeyError, ValueError):  # none yet, or unreadable: sampled again
        return None


def save(folder: Path, key: str, x: torch.Tensor, y: torch.Tensor, meta: dict) -> None:
    path = cache_path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, x=to_uint8(x), y=y.cpu().numpy(), meta=json.dumps(meta, default=str))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def generate(
    model,
    schedule,
    shape: tuple[int, int, int],
    model_classes: list[int],
    per_class: int,
    sampler: str,
    steps: int,
    guidance: float,
    seed: int,
    batch_size: int,
    eta: float,
    device,
) -> tuple[torch.Tensor, float]:
    """per_class images of each of the model's classes `model_classes` (its label indices), cycling;
    returns the images (on the CPU, quantised as they will be stored) and the sampling seconds."""
    from workbench.jobs.diffusion.samplers import sample_batched

    y = cycling_labels(model_classes, per_class).to(device)
    r = sample_batched(
        model,
        schedule,
        sampler,
        steps,
        (len(y), *shape),
        y,
        guidance,
        model.null_class,
        seed=seed,
        batch_size=batch_size,
        eta=eta,
        device=device,
    )
    return from_uint8(to_uint8(r.x)), r.seconds
