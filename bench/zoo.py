"""The zoo benchmark: attribution between diffusion models the workbench trains itself from committed
specs (bench/specs/zoo/*.yaml: four digits models that differ in width, depth, noise schedule and
training length), every recipe compared on the same fresh draws.

    WORKBENCH_HOME=/tmp/zoo python bench/zoo.py [--train 200] [--test 100]

It submits the four images runs and waits for them, then submits one attribution run over them (the
run ids are the ones just made, so nothing is hard-coded) and prints its `recipes` table. About
10-20 minutes on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = [
    {"name": "spectrum", "patch_size": 8, "test_patches": 4},
    {"name": "patches", "patch_size": 16, "width": 32, "test_patches": 1},
    {"name": "patches", "patch_size": 16, "width": 32, "test_patches": 1, "front": "srm"},
    {"name": "patches", "patch_size": 16, "width": 32, "test_patches": 1, "front": "bayar"},
]


def workbench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "workbench", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"workbench {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=200, help="training images drawn per model")
    p.add_argument("--test", type=int, default=100, help="test images drawn per model")
    a = p.parse_args()
    runs = []
    for spec in sorted((HERE / "specs" / "zoo").glob("*.yaml")):
        runs += json.loads(workbench("submit", str(spec), "--json", "--wait"))["run_ids"]
    attribution = {
        "kind": "attribution",
        "name": "attribution-zoo-cpu",
        "data": {
            "source": "zoo",
            "runs": runs,
            "train_per_class": a.train,
            "test_per_class": a.test,
            "sampler": {"name": "ddim", "steps": 50},
            "guidance_scale": 1.0,
        },
        "recipes": RECIPES,
        "train": {
            "steps": 800,
            "batch_size": 64,
            "lr": 0.002,
            "warmup_steps": 50,
            "eval_every": 200,
            "patience": 3,
            "max_val_images": 400,
        },
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(attribution, f)  # JSON is YAML
    (run,) = json.loads(workbench("submit", f.name, "--json", "--wait"))["run_ids"]
    print(workbench("show", str(run)))


if __name__ == "__main__":
    main()
