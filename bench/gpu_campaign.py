"""Every GPU figure in one go: on one CUDA GPU, the MNIST images and sampling tables, the feature-sweep and
augmentation paper presets cut to fit, the faint-trace attribution benchmark at paper size, and the
training-throughput ratio against a diffusers-style loop on the same UNet; each table printed with its
intervals and the time it took.

    python bench/gpu_campaign.py [--home DIR]      # on a CUDA machine (make gpu-campaign); MNIST from
                                                   # $WORKBENCH_DATA/mnist.npz offline
    python bench/gpu_campaign.py --tiny            # the same chain on the CPU at toy size (a test)
    python bench/gpu_campaign.py --home H --only images-mnist sampling-mnist   # some steps, in one store

The specs are committed (bench/specs/gpu/, in order); they run through one real worker on device 0 (the
sampling spec names the images run by experiment). `--tiny` merges each step's toy sizes into its spec
(digits, a few steps, the CPU) to check the chain end to end; its numbers mean nothing.
The full campaign is sized for about 12 minutes on one H100/H200 by estimate from earlier single runs
(images 5000 steps: 9.4 min; the 1000-step chain on 5000 samples: 6.3 min); it has not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from figures import workbench  # noqa: E402  (bench/ is the script's folder: on sys.path)

from workbench.jobs.spec import deep_merge  # noqa: E402

SMALL_SAMPLE = {"n_samples": 20, "eval_sets": 2, "sampler": {"name": "ddim", "steps": 5}}
TINY_IMAGES = {
    "preset": "smoke",
    "data": {"name": "digits"},
    "timesteps": 50,
    "train": {"steps": 20, "checkpoint_every": 20},
    "sample": SMALL_SAMPLE,
}
# (spec, toy sizes merged in by --tiny); run in this order
STEPS = [
    ("bench/specs/gpu/images-mnist.yaml", TINY_IMAGES),
    ("bench/specs/gpu/sampling-mnist.yaml", {"n_samples": 20, "eval_sets": 2, "batch_size": 100}),
    (
        "bench/specs/gpu/feature-sweep-mnist.yaml",
        {
            "preset": "smoke",
            "train": {**TINY_IMAGES, "sample": {**SMALL_SAMPLE, "guidance_scales": [0.0]}},
            "timesteps": [2, 20],
            "blocks": ["down1", "mid"],
            "ks": [1, 3],
            "repeats": 2,
            "val_per_class": 10,
            "fixed": [{"t": 20, "block": "mid"}],
            "vae": {"channels": [8, 16], "steps": 20, "batch_size": 32},
        },
    ),
    (
        "bench/specs/gpu/augmentation-mnist.yaml",
        {
            "preset": "smoke",
            "real_per_class": [3],
            "ratios": [1],
            "seeds": 2,
            "diffusion": {"train": {"steps": 20, "checkpoint_every": 20}},
            "classifier": {"steps": 20, "batch_size": 16},
        },
    ),
    (
        "bench/specs/gpu/attribution-traces.yaml",
        {
            "data": {"base": "digits", "train_per_class": 20, "test_per_class": 10},
            "recipes": [
                {"name": "spectrum", "patch_size": 8, "test_patches": 4},
                {"name": "patches", "patch_size": 16, "width": 8, "test_patches": 1, "front": "bayar"},
            ],
            "train": {
                "steps": 10,
                "batch_size": 16,
                "eval_every": 5,
                "warmup_steps": 2,
                "max_val_images": 40,
            },
        },
    ),
]
STEP_NAMES = [Path(path).stem for path, _ in STEPS]  # images-mnist, sampling-mnist, ...
THROUGHPUT = {
    "gpu": ["--device", "cuda", "--config", "mnist-paper", "--steps", "20"],
    "tiny": ["--device", "cpu", "--config", "digits", "--steps", "2"],
}


def minutes(record: dict) -> float:
    start, end = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds() / 60


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="the same chain at toy size on the CPU")
    p.add_argument("--home", type=Path, help="the store to run in (default: a new temporary one)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=[*STEP_NAMES, "throughput"],
        help="these steps only (a device lease caps one command at 10 min: run the campaign in two calls "
        "on one --home; sampling needs images done first)",
    )
    a = p.parse_args()
    only = set(a.only or [*STEP_NAMES, "throughput"])
    home = a.home or Path(tempfile.mkdtemp(prefix="gpu-campaign-"))
    env = dict(os.environ, WORKBENCH_HOME=str(home), WORKBENCH_LOCK_DIR=str(home / "locks"))
    (home / "specs").mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    ids = []
    for path, tiny in STEPS:
        if Path(path).stem not in only:
            continue
        doc = yaml.safe_load((ROOT / path).read_text())
        if a.tiny:
            doc = deep_merge(doc, {**tiny, "device": "cpu"})
        spec = home / "specs" / Path(path).name
        spec.write_text(json.dumps(doc))  # JSON is YAML
        ids += json.loads(workbench("submit", str(spec), "--no-worker", "--json", env=env))["run_ids"]
    print(f"store {home}: runs {ids}", flush=True)
    # one worker runs them in order; the sampling run's model is the images run's, named by experiment
    subprocess.run(
        [sys.executable, "-m", "workbench", "worker", "--devices", "cpu" if a.tiny else "0", "--once"],
        env=env,
        check=True,
    )
    failed = []
    for run in ids:
        record = json.loads(workbench("show", str(run), "--json", env=env))
        took = f"{minutes(record):.1f} min" if record["finished_at"] and record["started_at"] else "-"
        print(f"\n=== {record['experiment']} (run {run}): {record['status']}, {took}")
        if record["status"] != "succeeded":
            failed.append(record["experiment"])
            print(record["error"])
            continue
        print(workbench("show", str(run), env=env))
    if "throughput" in only:
        t0 = time.monotonic()
        throughput = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "train_throughput.py"),
                *THROUGHPUT["tiny" if a.tiny else "gpu"],
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        took = (time.monotonic() - t0) / 60
        print(f"\n=== training throughput ({took:.1f} min)\n{throughput.stdout}{throughput.stderr[-2000:]}")
        if throughput.returncode != 0:
            failed.append("throughput")
    print(
        f"campaign: {(time.monotonic() - began) / 60:.1f} min in all; "
        + (f"failed: {failed}" if failed else "every step succeeded")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
