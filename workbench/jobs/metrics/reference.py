"""The reference classifier: judges generated images independently of the model that made them.

One small CNN per dataset (and image size and data fingerprint), trained by the workbench the first
time it is needed and cached in the store (`cache/reference/`), so every run on that data is judged
by the same network. It gives:
- class accuracy of guided samples (does a sample of class y look like a y?), and
- classifier-FID: the Frechet distance between its 128-d penultimate features of samples and of
  test images, and classifier-KID, the unbiased kernel distance between the same features. These are
  NOT Inception FID/KID: comparable only between runs judged by the same reference classifier in the
  workbench, never with published numbers.
Both come over R sample sets of N samples each (mean, t-interval), next to their floor: the same
distances for R disjoint sets of N real training images **the classifier never saw** (every sixth
training image is kept out of its training: the floor pool; a classifier's features of its own training
images are not distributed as on new images, so a floor from them is not what real data scores). Every
set is measured against the whole test split. FID's expectation shrinks with N (at N = 100 it is far
above 0 even for real images), so a FID means something only next to its floor at the same N; KID is
unbiased, its floor 0 in expectation.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from workbench.jobs.classify import FEATURES as FEATURES  # the width of its features, for callers
from workbench.jobs.classify import ClassifierConfig, ReferenceCNN, train_classifier
from workbench.jobs.data.images import ImageData
from workbench.jobs.metrics.distances import frechet_distance, kernel_distance

RECIPE = "cnn-v2"  # bump when the architecture or training recipe changes: old caches are then ignored
FLOOR_EVERY = 6  # training images i with i % 6 == 5 are the floor pool: the classifier never trains on them


def floor_pool(n: int) -> np.ndarray:
    """Indices of the training images kept out of the reference classifier's training."""
    return np.arange(FLOOR_EVERY - 1, n, FLOOR_EVERY)


def judge_images(n: int) -> np.ndarray:
    """Indices of the training images the reference classifier trains on: all but the floor pool."""
    return np.setdiff1d(np.arange(n), floor_pool(n))


@dataclass
class Judgement:
    features: np.ndarray  # (N, 128)
    predictions: np.ndarray  # (N,)


class ReferenceClassifier:
    def __init__(self, net: ReferenceCNN, info: dict, device: torch.device | str):
        self.net = net.to(device).eval()
        self.info = info
        self.device = device
        self._real: dict[int, np.ndarray] = {}

    @property
    def test_accuracy(self) -> float:
        return self.info["test_accuracy"]

    @torch.no_grad()
    def judge(self, x: torch.Tensor, batch: int = 1000) -> Judgement:
        feats, preds = [], []
        for i in range(0, len(x), batch):
            f = self.net.body(x[i : i + batch].to(self.device, torch.float32).clamp(-1, 1))
            feats.append(f.float().cpu())
            preds.append(self.net.head(f).argmax(1).cpu())
        return Judgement(torch.cat(feats).numpy(), torch.cat(preds).numpy())

    def real_features(self, real: torch.Tensor) -> np.ndarray:
        """Features of a real image set, computed once per set."""
        if id(real) not in self._real:
            self._real[id(real)] = self.judge(real).features
        return self._real[id(real)]

    def fid(self, samples: torch.Tensor | Judgement, real: torch.Tensor) -> float:
        """classifier-FID of one set of samples (images or their judgement) against real images."""
        feats = samples.features if isinstance(samples, Judgement) else self.judge(samples).features
        return frechet_distance(feats, self.real_features(real))

    def quality(
        self, x: torch.Tensor, y: torch.Tensor | None, real: torch.Tensor, sets: int, inception=None
    ) -> tuple[dict[str, object], dict[str, list[float]]]:
        """What the image kinds report for R = `sets` sample sets stacked in x (set k: rows k*N to (k+1)*N):
        classifier-FID and -KID against `real` as mean and interval over the sets, class accuracy over all
        samples with its Wilson interval (None without labels), and, when a run asks for it, Inception
        FID (against the real images its metric was given), also per set. Also returns each set's
        figures, for paired comparisons."""
        from workbench.jobs.metrics.stats import mean_ci, share_ci

        j = self.judge(x)
        per_set = self._per_set(np.split(j.features, sets), real)
        out: dict[str, object] = {}
        for key, values in per_set.items():
            out.update(mean_ci(values).columns(key))
        out["class_accuracy"] = None
        if y is not None:  # a share of all R * N samples
            out.update(
                share_ci(int((j.predictions == y.cpu().numpy()).sum()), len(x)).columns("class_accuracy")
            )
        if inception is not None:  # set by set, as the published figures are (one set of N each)
            per_set["inception_fid"] = [inception(s) for s in x.split(len(x) // sets)]
            out.update(mean_ci(per_set["inception_fid"]).columns("inception_fid"))
        return out, per_set

    def _per_set(self, feats: list[np.ndarray], real: torch.Tensor) -> dict[str, list[float]]:
        """Each set's classifier-FID and -KID against the reference images."""
        real_f = self.real_features(real)
        return {
            "classifier_fid": [frechet_distance(f, real_f) for f in feats],
            "classifier_kid": [kernel_distance(f, real_f) for f in feats],
        }

    def floor(
        self, train: torch.Tensor, real: torch.Tensor, n: int, sets: int, seed: int
    ) -> dict[str, object]:
        """classifier-FID and -KID of R = `sets` sets of n real training images from the floor pool (never
        seen by this classifier; disjoint sets while the pool lasts) against `real`: what a perfect
        sampler would score at this N."""
        from workbench.jobs.metrics.stats import mean_ci

        pool = torch.from_numpy(floor_pool(len(train)))
        g = torch.Generator().manual_seed(seed)
        order = torch.cat(
            [pool[torch.randperm(len(pool), generator=g)] for _ in range(-(-n * sets // len(pool)))]
        )
        per_set = self._per_set(np.split(self.judge(train[order[: n * sets]]).features, sets), real)
        return {
            **mean_ci(per_set["classifier_fid"]).columns("classifier_fid_floor"),
            **mean_ci(per_set["classifier_kid"]).columns("classifier_kid_floor"),
        }


def cache_paths(folder: Path, data: ImageData) -> tuple[Path, Path]:
    """The weights and notes of the classifier for these images in the cache folder (`ctx.cache_dir`)."""
    c, h, w = data.shape
    stem = Path(folder) / f"{data.name}-{c}x{h}x{w}-{data.fingerprint()}-{RECIPE}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def load_or_train(
    folder: Path, data: ImageData, device: torch.device | str, log: Callable[[str], None] = print
) -> tuple[ReferenceClassifier, bool]:
    """(classifier, whether it came from the cache). Trains and caches it on first use; a file lock
    makes concurrent runs on the same data train it once and the others wait and reuse it."""
    weights, meta = cache_paths(folder, data)
    weights.parent.mkdir(parents=True, exist_ok=True)
    with open(weights.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if weights.exists() and meta.exists():
            net = ReferenceCNN(data.shape[0], data.num_classes)
            net.load_state_dict(load_file(weights))
            info = json.loads(meta.read_text())
            log(
                f"reference classifier for {data.name} {tuple(data.shape)} (cached): test accuracy "
                f"{info['test_accuracy']:.4f} on {info['test_images']} test images"
            )
            return ReferenceClassifier(net, info, device), True
        net, info = train_reference(data, device, log)
        tmp = weights.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp)
        tmp.replace(weights)
        meta.write_text(json.dumps(info, indent=1))
        return ReferenceClassifier(net, info, device), False


def train_reference(
    data: ImageData, device: torch.device | str, log: Callable[[str], None] = print
) -> tuple[ReferenceCNN, dict]:
    """Seeded and independent of any run: the shared classifier loop (jobs.classify) with AdamW + one-cycle,
    light augmentation (shifts; flips for RGB), label smoothing, in fp32 on every device."""
    start = time.perf_counter()
    c = data.shape[0]
    n = len(data.x_train)
    seen = torch.from_numpy(judge_images(n))  # the floor pool stays unseen
    epochs = 30 if n < 5000 else (4 if c == 1 else 25)
    batch = 64 if n < 5000 else 256
    steps = epochs * max(1, len(seen) // batch)
    cfg = ClassifierConfig(
        "cnn",
        steps,
        batch,
        lr=2e-3,
        weight_decay=5e-4,
        flips=c == 3,
        label_smoothing=0.05,
        mixed_precision=False,
    )
    net = train_classifier(
        data.x_train[seen], data.y_train[seen], data.num_classes, cfg, seed=0, device=device
    )
    judge = ReferenceClassifier(net, {}, device).judge(data.x_test)
    accuracy = float((judge.predictions == data.y_test.numpy()).mean())
    info = {
        "dataset": data.name,
        "shape": list(data.shape),
        "num_classes": data.num_classes,
        "recipe": RECIPE,
        "epochs": epochs,
        "steps": steps,
        "train_images": len(seen),
        "floor_pool_images": n - len(seen),
        "test_images": len(data.x_test),
        "test_accuracy": accuracy,
        "seconds": round(time.perf_counter() - start, 1),
    }
    log(
        f"reference classifier for {data.name} {tuple(data.shape)}: test accuracy {accuracy:.4f} "
        f"after {steps} steps ({info['seconds']} s)"
    )
    return net, info
