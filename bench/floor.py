"""The reference classifier's real floor, from images it never saw against images it trained on,
side by side: the same classifier (trained on five sixths of the training split), R sets of N real
training images each against the whole test split.

    python bench/floor.py mnist /path/to/mnist.npz [--n 1000] [--sets 5]

A floor is what a perfect sampler scores; KID is unbiased, so an honest floor's KID interval covers 0.
About 3-6 minutes on 2 vCPUs for MNIST (most of it training the classifier).
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench.jobs.data.images import load_images
from workbench.jobs.metrics import reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=["digits", "mnist", "fashion_mnist"])
    p.add_argument("path", nargs="?", help="the dataset's .npz (mnist, fashion_mnist)")
    p.add_argument("--n", type=int, default=1000, help="N: images per set")
    p.add_argument("--sets", type=int, default=5, help="R: sets")
    a = p.parse_args()
    data = load_images(a.dataset, a.path)
    start = time.perf_counter()
    net, info = reference.train_reference(data, "cpu", log=lambda m: None)
    judge = reference.ReferenceClassifier(net, info, "cpu")
    print(
        f"{a.dataset}: classifier trained on {info['train_images']} images in {time.perf_counter() - start:.0f} s, "
        f"test accuracy {info['test_accuracy']:.4f}; floor pool {info['floor_pool_images']} images"
    )
    seen = data.x_train[torch.from_numpy(reference.judge_images(len(data.x_train)))]
    for label, train in (("unseen (the floor pool)", data.x_train), ("seen (its training images)", seen)):
        f = judge.floor(train, data.x_test, a.n, a.sets, seed=0)
        print(
            f"{label:28s} classifier-FID {f['classifier_fid_floor']:.4f} "
            f"[{f['classifier_fid_floor_ci_low']:.4f}, {f['classifier_fid_floor_ci_high']:.4f}]  "
            f"KID {f['classifier_kid_floor']:.5f} "
            f"[{f['classifier_kid_floor_ci_low']:.5f}, {f['classifier_kid_floor_ci_high']:.5f}]  "
            f"(R = {a.sets} sets of N = {a.n})"
        )


if __name__ == "__main__":
    main()
