"""The reference classifier's real floor, from images it never saw against images it trained on,
side by side: the same classifier (trained on five sixths of the training split), R sets of N real
training images each against the whole test split.

    python bench/floor.py mnist /path/to/mnist.npz [--n 1000] [--sets 5] [--home DIR]

A floor is what a perfect sampler scores. KID is unbiased, so a floor's KID interval covers 0 when the
floor images and the test split come from one distribution; a third line measures that directly, sets
from the even test images against the odd ones. The classifier is cached under --home (the
store's cache: a second call, or a run on that store, reuses it); training it takes 5-20 minutes on
2 vCPUs for MNIST.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from workbench.jobs.data.images import load_images
from workbench.jobs.metrics import reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=["digits", "mnist", "fashion_mnist"])
    p.add_argument("path", nargs="?", help="the dataset's .npz (mnist, fashion_mnist)")
    p.add_argument("--n", type=int, default=1000, help="N: images per set")
    p.add_argument("--sets", type=int, default=5, help="R: sets")
    p.add_argument("--home", default=tempfile.mkdtemp(), help="where the classifier is cached")
    a = p.parse_args()
    data = load_images(a.dataset, a.path)
    start = time.perf_counter()
    judge, _ = reference.load_or_train(Path(a.home) / "cache" / "reference", data, "cpu", log=lambda m: None)
    info = judge.info
    print(
        f"{a.dataset}: classifier trained on {info['train_images']} images in {time.perf_counter() - start:.0f} s, "
        f"test accuracy {info['test_accuracy']:.4f}; floor pool {info['floor_pool_images']} images"
    )
    seen = data.x_train[torch.from_numpy(reference.judge_images(len(data.x_train)))]
    # even and odd test images (MNIST's first 5000 test images are cleaner than its last 5000); floor()
    # draws from every sixth image it is given, so six copies of the even ones make them all its pool
    test_a, test_b = data.x_test[0::2].repeat_interleave(6, 0), data.x_test[1::2]
    for label, train, real in (
        ("unseen (the floor pool)", data.x_train, data.x_test),
        ("seen (its training images)", seen, data.x_test),
        ("even vs odd test images", test_a, test_b),
    ):
        f = judge.floor(train, real, a.n, a.sets, seed=0)
        print(
            f"{label:28s} classifier-FID {f['classifier_fid_floor']:.4f} "
            f"[{f['classifier_fid_floor_ci_low']:.4f}, {f['classifier_fid_floor_ci_high']:.4f}]  "
            f"KID {f['classifier_kid_floor']:.5f} "
            f"[{f['classifier_kid_floor_ci_low']:.5f}, {f['classifier_kid_floor_ci_high']:.5f}]  "
            f"(R = {a.sets} sets of N = {a.n})"
        )


if __name__ == "__main__":
    main()
