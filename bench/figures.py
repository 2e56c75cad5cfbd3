"""Every result figure of the README, the committed specs behind it, and the one command that rebuilds it.

    python bench/figures.py                       # list the figures: spec chain, device, README line
    python bench/figures.py NAME [--home DIR] [--reuse]   # rebuild one: its specs in order, then show them
    make figures                                  # the list

A chain's later specs name its earlier runs by experiment (`model_run: {experiment: ...}`), never by id,
so a chain rebuilds in any store. Data comes from `$WORKBENCH_DATA` (`mnist.npz` there serves MNIST
offline) or from the spec's own folder; no spec names a path on one machine. The README marks each
results table (and each block of printed results) with the command that rebuilds it; a test parses the
README and fails on a results block without one, or on a figure whose specs do not validate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMAND = re.compile(r"python bench/figures\.py ([a-z0-9-]+)")
# A results block holds an estimate printed as `value [low, high]`.
INTERVAL = re.compile(r"[\d%)]\s*\[[+-]?\d[\d.e+-]*,\s*[+-]?\d[\d.e+-]*\]")
MARK_DISTANCE = 20  # lines above a results block within which its rebuild command must be named


@dataclass(frozen=True)
class Figure:
    title: str
    device: str  # where the README's numbers were measured
    specs: tuple[str, ...] = ()  # submitted in this order, each waited for
    prepare: tuple[str, ...] = ()  # commands run first (data files a spec reads)
    command: str | None = None  # a bench script that makes the figure itself (no spec chain)


FIGURES = {
    "quickstart": Figure(
        "the quickstart: DDPM with guidance on 2D data (make demo)", "cpu", ("examples/quickstart.yaml",)
    ),
    "feature-sweep-mnist-cpu": Figure(
        "few-shot probes on an unconditional MNIST DDPM's features against pixels and a VAE",
        "cpu",
        ("bench/specs/features-model-mnist-cpu.yaml", "bench/specs/feature-sweep-mnist-cpu.yaml"),
    ),
    "augmentation-mnist-cpu": Figure(
        "real vs real + synthetic vs synthetic classifiers, MNIST 16 px, 3 and 10 real per class",
        "cpu",
        ("bench/specs/augmentation-mnist-cpu.yaml",),
    ),
    "attribution-traces-cpu": Figure(
        "attribution on faint upsampling traces: every recipe against the spectrum baseline",
        "cpu",
        ("bench/specs/attribution-traces-cpu.yaml",),
    ),
    "attribution-traces-cnn-cpu": Figure(
        "attribution on faint traces: the Bayar CNN's width and patch size",
        "cpu",
        ("bench/specs/attribution-traces-cnn-cpu.yaml",),
    ),
    "attribution-traces-full-cpu": Figure(
        "attribution on full-strength traces", "cpu", ("bench/specs/attribution-traces-full-cpu.yaml",)
    ),
    "attribution-heldout-cpu": Figure(
        "attribution on a held-out DRAGON-schema shard set made apart from the benchmark",
        "cpu",
        ("bench/specs/attribution-heldout-cpu.yaml",),
        prepare=("python bench/faint_shards.py bench/specs/.heldout",),
    ),
    "attribution-zoo-cpu": Figure(
        "attribution between seven digits diffusion models and samplers the workbench trained",
        "cpu",
        (
            "bench/specs/zoo/zoo-base.yaml",
            "bench/specs/zoo/zoo-cosine.yaml",
            "bench/specs/zoo/zoo-deep-short.yaml",
            "bench/specs/zoo/zoo-wide.yaml",
            "bench/specs/zoo/attribution-zoo-cpu.yaml",
        ),
    ),
    "reference-floor-mnist": Figure(
        "the reference classifier's real floors on MNIST: unseen, seen, and test against test",
        "cpu",
        command="python bench/floor.py mnist",
    ),
    "tui-screens": Figure(
        "the TUI's screens over the quickstart's store",
        "cpu",
        ("examples/quickstart.yaml",),
        command="python docs/screens.py --width 150",
    ),
    "familiarity": Figure(
        "how often attribute flags images unlike the smoke model's training set",
        "cpu",
        command="python bench/familiarity.py",
    ),
    "images-sampling-mnist-gpu": Figure(
        "MNIST DDPM with guidance, then every sampler against the 1000-step chain",
        "gpu",
        ("bench/specs/images-mnist-gpu.yaml", "bench/specs/sampling-mnist-gpu.yaml"),
    ),
}


def results_blocks(text: str) -> list[tuple[int, int]]:
    """(first line, last line), 1-based, of every Markdown table and fenced block holding an estimate."""
    lines, found, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if any(INTERVAL.search(x) for x in lines[i + 1 : j]):
                found.append((i + 1, j + 1))
            i = j + 1
        elif lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            if any(INTERVAL.search(x) for x in lines[i:j]):
                found.append((i + 1, j))
            i = j
        else:
            i += 1
    return found


def rebuild_commands(text: str) -> list[tuple[int, int, str | None]]:
    """(first line, last line, figure name or None) per results block: the nearest `python bench/figures.py
    NAME` in the MARK_DISTANCE lines above it (None: the block names no way to rebuild it)."""
    lines = text.splitlines()
    out = []
    for first, last in results_blocks(text):
        above = lines[max(0, first - 1 - MARK_DISTANCE) : first - 1]
        names = [m.group(1) for line in above for m in COMMAND.finditer(line)]
        out.append((first, last, names[-1] if names else None))
    return out


def workbench(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "workbench", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"workbench {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def rebuild(name: str, home: Path, reuse: bool = False) -> None:
    figure = FIGURES[name]
    env = dict(os.environ, WORKBENCH_HOME=str(home))
    print(f"{name}: {figure.title} (measured on {figure.device}); store {home}", flush=True)
    for command in figure.prepare:
        subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=ROOT, check=True)
    last = []
    for spec in figure.specs:
        if reuse and (done := succeeded(ROOT / spec, env)):
            print(f"{spec}: run {done} of this store serves", flush=True)
            continue
        print(f"submit {spec} --wait", flush=True)
        last = json.loads(workbench("submit", str(ROOT / spec), "--json", "--wait", env=env))["run_ids"]
    for run in last:
        print(workbench("show", str(run), env=env))
    if figure.command:
        subprocess.run(
            figure.command.replace("python ", f"{sys.executable} ", 1),
            shell=True,
            cwd=ROOT,
            env=env,
            check=True,
        )


def succeeded(spec: Path, env: dict) -> int | None:
    """The newest succeeded run of the spec's experiment in the store, if any."""
    import yaml

    name = (yaml.safe_load(spec.read_text()) or {}).get("name") or spec.stem
    runs = json.loads(workbench("runs", "--status", "succeeded", "--json", env=env))
    return max((r["id"] for r in runs if r["experiment"] == name), default=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "name", nargs="?", choices=sorted(FIGURES), help="the figure to rebuild (default: list them)"
    )
    p.add_argument("--home", type=Path, help="the store to run in (default: a new temporary one)")
    p.add_argument(
        "--reuse", action="store_true", help="skip a spec whose experiment already succeeded in --home"
    )
    a = p.parse_args()
    if a.name:
        rebuild(a.name, a.home or Path(tempfile.mkdtemp(prefix=f"figure-{a.name}-")), a.reuse)
        return
    lines: dict[str, int] = {}
    for first, _, name in rebuild_commands(README.read_text()):
        if name:
            lines.setdefault(name, first)
    for name, f in FIGURES.items():
        where = f"README line {lines[name]}" if name in lines else "not in the README"
        print(f"{name}  [{f.device}; {where}]\n  {f.title}")
        for command in f.prepare:
            print(f"  prepare: {command}")
        print(f"  command: {f.command}" if f.command else "  specs:   " + " -> ".join(f.specs))


if __name__ == "__main__":
    main()
