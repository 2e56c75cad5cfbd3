"""The zoo benchmark: attribution between diffusion models the workbench trains itself from committed
specs, every recipe compared on the same fresh draws. Seven classes that differ as DRAGON's generators
do: four digits models (bench/specs/zoo/*.yaml: width, depth, noise schedule, training length) drawn
with DDIM-50 at guidance 1, and the base model drawn three other ways (DDIM-10: fewer steps;
DPM-Solver++ 20: another sampler; guidance 3).

    WORKBENCH_HOME=/tmp/zoo python bench/zoo.py [--train 200] [--test 100] [--runs 1 2 3 4]

It submits the four images runs and waits for them (or takes finished ones with --runs, in the order
of the spec files: base, cosine, deep-short, wide), then one attribution run over them, and prints it.
About 35-45 minutes on 2 vCPUs from scratch.
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
    p.add_argument("--runs", type=int, nargs=4, help="finished zoo images runs to reuse (spec file order)")
    a = p.parse_args()
    runs = a.runs or []
    for spec in [] if a.runs else sorted((HERE / "specs" / "zoo").glob("*.yaml")):
        runs += json.loads(workbench("submit", str(spec), "--json", "--wait"))["run_ids"]
    base = runs[0]
    members = runs + [
        {"run": base, "sampler": {"name": "ddim", "steps": 10}, "name": "zoo-base ddim-10"},
        {"run": base, "sampler": {"name": "dpmsolver++", "steps": 20}, "name": "zoo-base dpm++-20"},
        {"run": base, "guidance_scale": 3.0, "name": "zoo-base guidance-3"},
    ]
    attribution = {
        "kind": "attribution",
        "name": "attribution-zoo-cpu",
        "data": {
            "source": "zoo",
            "runs": members,
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
