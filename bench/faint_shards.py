"""A held-out attribution set, made apart from the workbench's own trace benchmark: DRAGON-schema
WebDataset shards of 8 "generators" that share one content distribution and differ only in faint
traces (a few grey levels), to check that a recipe tuned on `source: traces` carries over.

Content: small random objects (ellipses, boxes, triangles) of random colours on a smooth tinted
background with a little texture, drawn at 32 px, then brought to 128 px. The generators differ in what
happens after that: the resampling kernel, a mild blur or sharpening, a faint periodic pattern, a
high-quality JPEG round trip, faint noise. Each is mixed in at `--strength` of its own size (default
0.25), so the trace is 0.3-3 grey levels RMS. Training and test images draw from different seeds; no
draw is shared between them. Uses numpy and PIL only, none of the workbench's code.

    python bench/faint_shards.py OUT_FOLDER [--train 200] [--test 80] [--strength 0.25]

then `source: shards` with `train: OUT_FOLDER/train-*.tar`, `test: OUT_FOLDER/test-*.tar`
(bench/specs/attribution-heldout-cpu.yaml).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIDE, BIG = 32, 128
GENERATORS = (
    "gen_nearest",
    "gen_bilinear",
    "gen_lanczos",
    "gen_blur",
    "gen_sharpen",
    "gen_grid",
    "gen_jpeg95",
    "gen_noise",
)


def content(rng: np.random.Generator) -> Image.Image:
    """A 32-px scene: a smooth two-colour gradient, a little texture, 1-4 small objects."""
    top, bottom = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = np.linspace(0, 1, SIDE)[:, None, None]
    bg = top * (1 - t) + bottom * t + rng.normal(0, 6, (SIDE, SIDE, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 5)):
        x, y = rng.uniform(0, SIDE, 2)
        r = rng.uniform(3, 10)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse([x - r, y - r * rng.uniform(0.5, 1), x + r, y + r], fill=colour)
        elif shape == 1:
            draw.rectangle([x - r, y - r, x + r * rng.uniform(0.5, 1.5), y + r], fill=colour)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    return img


def generate(name: str, small: Image.Image, rng: np.random.Generator, strength: float) -> np.ndarray:
    reference = np.asarray(small.resize((BIG, BIG), Image.BICUBIC), np.float64)
    if name == "gen_nearest":
        own = np.asarray(small.resize((BIG, BIG), Image.NEAREST), np.float64)
    elif name == "gen_bilinear":
        own = np.asarray(small.resize((BIG, BIG), Image.BILINEAR), np.float64)
    elif name == "gen_lanczos":
        own = np.asarray(small.resize((BIG, BIG), Image.LANCZOS), np.float64)
    elif name == "gen_blur":
        own = np.asarray(
            Image.fromarray(reference.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)), np.float64
        )
    elif name == "gen_sharpen":
        own = np.asarray(
            Image.fromarray(reference.astype(np.uint8)).filter(
                ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0)
            ),
            np.float64,
        )
    elif name == "gen_grid":  # a decoder's periodic pattern, period 4 px
        i = np.arange(BIG)
        own = reference + 12 * (np.cos(np.pi * i / 2)[:, None] * np.cos(np.pi * i / 2)[None, :])[..., None]
    elif name == "gen_jpeg95":
        own = reference  # the JPEG round trip is applied to the final image below
    elif name == "gen_noise":
        own = reference + rng.normal(0, 12, reference.shape)
    else:
        raise ValueError(name)
    out = np.clip(reference + strength * (own - reference), 0, 255).round().astype(np.uint8)
    if name == "gen_jpeg95":
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=95)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def write_split(folder: Path, split: str, per_class: int, seed: int, strength: float) -> None:
    def add(tar, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    shards = [tarfile.open(folder / f"{split}-{i}.tar", "w") for i in range(2)]
    for k, name in enumerate(GENERATORS):
        for i in range(per_class):
            rng = np.random.default_rng([seed, k, i])
            img = generate(name, content(rng), rng, strength)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            key = f"{split}_{k}_{i:05d}"
            prompt = f"scene {seed}-{k}-{i}"
            tar = shards[i % 2]
            add(tar, f"{key}.png", buf.getvalue())
            add(tar, f"{key}.model.txt", name.encode())
            add(tar, f"{key}.json", json.dumps({"prompt": prompt, "model": name}).encode())
            add(tar, f"{key}.prompt.cls", b"0")
    for tar in shards:
        tar.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--test", type=int, default=80)
    p.add_argument("--strength", type=float, default=0.25)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    write_split(a.out, "train", a.train, 1000, a.strength)
    write_split(a.out, "test", a.test, 2000, a.strength)
    print(f"wrote {len(GENERATORS)} generators x ({a.train} train, {a.test} test) to {a.out}")


if __name__ == "__main__":
    main()
