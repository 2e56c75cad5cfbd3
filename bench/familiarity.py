"""How often `workbench attribute` flags images as unlike the model's training set, per kind of image.

Trains examples/attribution-smoke.yaml in a fresh home (about 25 s on 2 CPUs), then attributes: fresh
digits through its four pipelines (in distribution), Fashion-MNIST through the same pipelines (new
content, same traces; needs FASHION_NPZ), 32 px crops of scikit-learn's two sample photos, uniform noise
and flat grey squares. Prints each set's flagged count with a 95 % Wilson interval and its mean top
probability, and the run's own `unfamiliar_test`. FASHION_NPZ defaults to $WORKBENCH_DATA/fashion_mnist.npz
(the Fashion row is left out without it).

    python bench/familiarity.py [FASHION_NPZ]     # or: python bench/figures.py familiarity
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wb(home: Path, *args: str) -> str:
    env = dict(os.environ, WORKBENCH_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def main() -> None:
    from sklearn.datasets import load_digits, load_sample_images

    import workbench.jobs.data.attribution as A
    from workbench.jobs.metrics.stats import share_ci

    data = Path(os.environ.get("WORKBENCH_DATA") or "/nonexistent") / "fashion_mnist.npz"
    fashion = Path(sys.argv[1]) if len(sys.argv) > 1 else (data if data.is_file() else None)
    with tempfile.TemporaryDirectory() as tmp:
        home, images = Path(tmp) / "home", Path(tmp) / "images"
        run_id = json.loads(
            wb(home, "submit", str(ROOT / "examples/attribution-smoke.yaml"), "--wait", "--json")
        )["run_ids"][0]
        summary = json.loads(wb(home, "show", str(run_id), "--json"))["summary"]
        rng = np.random.default_rng(5)
        pipes = ["nearest", "bilinear", "bicubic", "transposed_conv"]
        sets: dict[str, list[np.ndarray]] = {}
        fresh = (load_digits().images[1700:1715] * 16).clip(0, 255).astype(np.uint8)
        sets["fresh digits through its pipelines"] = [
            img for p in pipes for img in A.trace_images(fresh, p, 4, seed=99, strength=0.2)
        ]
        if fashion is not None:
            x = np.load(fashion)["x_test"][:15]
            small = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.BOX)) for im in x])
            sets["Fashion-MNIST through its pipelines"] = [
                img for p in pipes for img in A.trace_images(small, p, 4, seed=7, strength=0.2)
            ]
        photos = load_sample_images().images
        crops = []
        for i in range(60):
            ph = photos[i % 2]
            y, x0 = rng.integers(0, ph.shape[0] - 64), rng.integers(0, ph.shape[1] - 64)
            crop = Image.fromarray(ph[y : y + 64, x0 : x0 + 64]).convert("L").resize((32, 32), Image.BICUBIC)
            crops.append(np.asarray(crop))
        sets["32 px crops of two photos"] = crops
        sets["uniform noise"] = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(60)]
        sets["flat grey squares"] = [
            np.full((32, 32), int(rng.integers(0, 256)), np.uint8) for _ in range(20)
        ]
        lo, hi = summary["unfamiliar_test_ci"]
        print(
            f"run {run_id}: its test split flagged {summary['unfamiliar_test']:.4f} [{lo:.4f}, {hi:.4f}] "
            f"(n={summary['unfamiliar_test_n']})"
        )
        print("| images | flagged | mean top probability |")
        for name, imgs in sets.items():
            folder = images / name.replace(" ", "_")
            folder.mkdir(parents=True)
            paths = []
            for i, img in enumerate(imgs):
                paths.append(folder / f"{i}.png")
                Image.fromarray(img).save(paths[-1])
            got = json.loads(wb(home, "attribute", str(run_id), *map(str, paths), "--json"))
            k = sum(g["unfamiliar"] for g in got)
            est = share_ci(k, len(got))
            print(f"| {name} ({len(got)}) | {k} = {est} | {np.mean([g['probability'] for g in got]):.3f} |")


if __name__ == "__main__":
    main()
