"""Attribution data: images labelled by the generator that made them, kept at native resolution.

Every source becomes the same thing, a `datasets.Dataset` with the columns `image` (PNG/JPEG bytes,
decoded when read), `generator` (the class) and `prompt` (what the image shows; the validation split is
held out by it):

- `webdataset_rows`: DRAGON-schema WebDataset shards (`png`, `model.txt`, `json` with `prompt` and
  `model`, `prompt.cls`), from the Hugging Face Hub (`lesc-unifi/dragon` by config name) or local .tar
  files, both read through `datasets.load_dataset` in streaming mode and written once into an Arrow
  cache under the store (at most so many images per generator), so a resumed run reads no shard again.
- `folder_rows`: one subfolder of images per generator (and optionally `train/` and `test/` above them).
- `array_rows`: images made in the run (the zoo of the workbench's own models, the trace benchmark:
  `trace_images`, every image's draws from its own seed, traces scaled by `strength`).

`file_traits` and `size_by_class` say how much the files' size, format and mode alone tell of the
generator; `normalised` re-encodes every image the same way.

Views (`train_view`, `test_views`) turn an image into what a model sees: the `patches` recipe crops at
native resolution (a random crop in training, a grid of crops at test time whose logits are averaged),
`resize224` resizes the whole image to 224 x 224, as ImageNet models expect. Robustness augmentations
(JPEG, blur, rescaling) and flips draw from a generator seeded per sample: a batch is the same on any
number of loader workers and after a resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.jobs.data.images import IMAGE_SUFFIXES, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def features():
    from datasets import Features, Image, Value

    return Features({"image": Image(), "generator": Value("string"), "prompt": Value("string")})


@dataclass
class AttributionData:
    name: str
    train: object  # datasets.Dataset: training and validation rows
    test: object  # datasets.Dataset
    class_names: list[str]


# --- sources -------------------------------------------------------------------------------------


def _dragon_rows(
    repo: str | None, config: str | None, files: tuple[str, ...] | None, split: str, per_class, classes
) -> Iterator[dict]:
    """The rows of one split, streamed (a generator for Dataset.from_generator: plain arguments only)."""
    import datasets

    if files is not None:
        stream = datasets.load_dataset(
            "webdataset", data_files={split: list(files)}, split=split, streaming=True
        )
    else:
        stream = datasets.load_dataset(repo, config, split=split, streaming=True)
    stream = stream.cast_column("png", datasets.Image(decode=False))  # bytes through, decoded when read
    yield from webdataset_rows(stream, per_class, classes)


def webdataset_rows(rows: Iterable[dict], per_class: int | None, classes) -> Iterator[dict]:
    """DRAGON-schema samples -> {image, generator, prompt}, at most per_class of each generator (only
    `classes` when given; the stream stops once each has its share)."""
    counts: Counter = Counter()
    for r in rows:
        meta = r.get("json") or {}
        generator = str(r.get("model.txt") or meta.get("model") or "").strip()
        if not generator:
            raise DataError(
                f"sample {r.get('__key__')!r} of {r.get('__url__')} names no generator "
                "(neither model.txt nor json.model): not DRAGON's schema"
            )
        check_generator_name(generator, f"sample {r.get('__key__')!r} of {r.get('__url__')}")
        if "png" not in r:
            raise DataError(f"sample {r.get('__key__')!r} of {r.get('__url__')} has no png image")
        if (classes and generator not in classes) or (per_class and counts[generator] >= per_class):
            if classes and per_class and all(counts[c] >= per_class for c in classes):
                return
            continue
        counts[generator] += 1
        prompt = meta.get("prompt") or r.get("prompt.cls") or r.get("__key__")
        yield {"image": r["png"], "generator": generator, "prompt": str(prompt)}


def load_webdataset(
    cache: Path,
    *,
    repo: str | None = None,
    config: str | None = None,
    files: dict[str, list[str]] | None = None,
    per_class: dict[str, int | None],
    classes: list[str] | None,
) -> dict[str, object]:
    """{split: Dataset} for "train" and "test", from the Hub (repo, config) or local shards (files)."""
    from datasets import Dataset

    out = {}
    for split in ("train", "test"):
        paths = files[split] if files is not None else None
        # the cache is known by what it holds: the source, its files' sizes and times, the limits
        stats = [(p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in paths or []]
        key = json.dumps([repo, config, stats, split, per_class[split], classes])
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:24]
        kwargs = {  # tuples, not lists: datasets would deal list values out as shards, one per job
            "repo": repo,
            "config": config,
            "files": tuple(paths) if paths else None,
            "split": split,
            "per_class": per_class[split],
            "classes": tuple(classes) if classes else None,
        }
        try:
            out[split] = Dataset.from_generator(
                _dragon_rows,
                features=features(),
                cache_dir=str(cache),
                gen_kwargs=kwargs,
                fingerprint=fingerprint,
                split=split,
            )
        except DataError:
            raise
        except Exception as e:  # the Hub unreachable, a missing config, an unreadable shard
            where = f"DRAGON config {config!r} from the Hugging Face Hub ({repo})" if repo else f"{paths}"
            hint = (
                " This machine may be offline: run where huggingface.co is reachable (the subset is then "
                "cached under the store), or copy its .tar shards here and use data.source: shards."
                if repo
                else ""
            )
            root = e  # datasets wraps the network's error: name the one underneath too
            while root.__cause__ or root.__context__:
                root = root.__cause__ or root.__context__
            why = f"{type(e).__name__}: {e}" + (f" ({type(root).__name__}: {root})" if root is not e else "")
            raise DataError(f"cannot read the {split} split of {where}: {why}.{hint}") from None
        if len(out[split]) == 0:
            raise DataError(
                f"the {split} split of {config or paths} holds no image (of the classes asked for)"
            )
    return out


MAX_GENERATOR_NAME = 200


def check_generator_name(name: str, where: str) -> None:
    """A class name is shown in terminals, tables and model cards: printable text (no ESC, no bidi
    override, no newline) of at most MAX_GENERATOR_NAME characters, else a DataError naming it."""
    if not name.isprintable() or len(name) > MAX_GENERATOR_NAME:
        shown = repr(name[:MAX_GENERATOR_NAME]) + ("..." if len(name) > MAX_GENERATOR_NAME else "")
        raise DataError(
            f"{where}: the generator name {shown} is not printable text of at most {MAX_GENERATOR_NAME} "
            "characters (control or format characters, or too long)"
        )


def folder_rows(root: Path, test_fraction: float, seed: int) -> dict[str, object]:
    """{train, test} from root/<generator>/*.png, or root/train/<generator> and root/test/<generator>
    (else a seeded share of each generator's images is held out as test). The prompt is the file's name
    (a folder has none), so validation is held out image by image."""
    from datasets import Dataset

    def scan(folder: Path) -> dict[str, list[Path]]:
        for d in folder.iterdir():
            if d.is_dir():
                check_generator_name(d.name, f"data.path: the folder {d.parent}")
        found = {
            d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(folder.iterdir())
            if d.is_dir()
        }
        return {k: v for k, v in found.items() if v}

    def dataset(items: list[tuple[Path, str]]):
        return Dataset.from_dict(
            {
                "image": [str(p) for p, _ in items],
                "generator": [g for _, g in items],
                "prompt": [p.stem for p, _ in items],
            },
            features=features(),
        )

    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {s: [(p, g) for g, ps in scan(root / s).items() for p in ps] for s in ("train", "test")}
    else:
        found = scan(root)
        if len(found) < 2:
            raise DataError(
                f"data.path: {root} needs a subfolder of images per generator (found {len(found)})"
            )
        rng = np.random.default_rng(seed)
        parts = {"train": [], "test": []}
        for g, ps in found.items():
            order = rng.permutation(len(ps))
            n_test = max(1, round(test_fraction * len(ps)))
            parts["test"] += [(ps[i], g) for i in order[:n_test]]
            parts["train"] += [(ps[i], g) for i in order[n_test:]]
    return {s: dataset(items) for s, items in parts.items()}


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def array_rows(images: np.ndarray, generators: list[str], prompts: list[str]):
    """A Dataset of uint8 (N, H, W, 3) images made in the run, stored losslessly (PNG)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "image": [{"bytes": png_bytes(x), "path": None} for x in images],
            "generator": list(generators),
            "prompt": list(prompts),
        },
        features=features(),
    )


# --- what the files themselves say --------------------------------------------------------------------


def file_traits(rows) -> list[str]:
    """Each image's size, file format and mode ("512x512 PNG RGB"), from its header alone."""
    from datasets import Image as ImageFeature
    from PIL import Image

    out = []
    for item in rows.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))["image"]:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
        with Image.open(source) as img:
            out.append(f"{img.width}x{img.height} {img.format} {img.mode}")
    return out


def size_by_class(traits: list[str], labels: np.ndarray, names: list[str]) -> tuple[float, float, list[dict]]:
    """How well an image's size, format and mode alone name its generator: (the share of images whose
    class is the commonest for their traits, the share of the commonest class, a row per class with its
    commonest traits). Well above the second, a classifier can learn the file, not the traces."""
    by_trait: dict[str, Counter] = {}
    for t, y in zip(traits, labels, strict=True):
        by_trait.setdefault(t, Counter())[int(y)] += 1
    named = sum(c.most_common(1)[0][1] for c in by_trait.values())
    majority = Counter(labels.tolist()).most_common(1)[0][1]
    rows = []
    for c, name in enumerate(names):
        mine = Counter(t for t, y in zip(traits, labels, strict=True) if y == c)
        top, count = mine.most_common(1)[0] if mine else ("-", 0)
        rows.append(
            {
                "class": name,
                "commonest": top,
                "share": count / max(1, sum(mine.values())),
                "distinct": len(mine),
            }
        )
    return named / len(labels), majority / len(labels), rows


def normalised(rows, size: int | None, fmt: str):
    """The same rows with every image re-encoded (PNG), and resized to size x size when asked (shorter
    side scaled to `size`, then a centred crop): what a generator's file format or size told is gone."""
    from PIL import Image

    def convert(batch):
        out = []
        for img in batch["image"]:
            img = img.convert("RGB")
            if size is not None:
                scale = size / min(img.size)
                img = img.resize(
                    (max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                    Image.BICUBIC,
                )
                left, top = (img.width - size) // 2, (img.height - size) // 2
                img = img.crop((left, top, left + size, top + size))
            buf = io.BytesIO()
            img.save(buf, format=fmt.upper())
            out.append({"bytes": buf.getvalue(), "path": None})
        return {"image": out}

    return rows.map(convert, batched=True, batch_size=64, features=features())


# --- splits --------------------------------------------------------------------------------------


def split_by_prompt(prompts: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): round(fraction x distinct prompts) prompts (at least one), chosen by a
    seeded hash, go wholly to validation, so no prompt is in both. With one distinct prompt only (no
    prompts), images are held out one by one instead."""
    distinct = sorted(set(prompts))
    groups = distinct if len(distinct) >= 2 else None
    keys = groups if groups is not None else [str(i) for i in range(len(prompts))]
    ranked = sorted(keys, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).digest())
    held = set(ranked[: max(1, round(fraction * len(keys)))])
    if groups is not None:
        val = np.array([p in held for p in prompts])
    else:
        val = np.array([str(i) in held for i in range(len(prompts))])
    if val.all() or not val.any():
        raise DataError(f"val_fraction {fraction}: leaves no image for training or validation")
    return np.flatnonzero(~val), np.flatnonzero(val)


# --- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """How a model sees an image: `patches` (native-resolution crops of side `size`) or `resize224`."""

    recipe: str
    size: int  # the crop side (patches) or the resized side (resize224)
    test_patches: int = 16  # patches: at most this many crops per image at test time


@dataclass(frozen=True)
class Augment:
    flips: bool = True
    jpeg: float = 0.0  # probability of a JPEG round trip
    jpeg_quality: tuple[int, int] = (65, 100)
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    rescale: float = 0.0  # probability of resampling by a random factor
    rescale_range: tuple[float, float] = (0.5, 1.5)


def decode(image) -> torch.Tensor:
    """A PIL image (as datasets decodes it) -> uint8 (3, H, W), grey and RGBA made RGB."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(image.convert("RGB"))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2.functional import normalize

    return normalize(x.float() / 255, IMAGENET_MEAN, IMAGENET_STD)


def _at_least(x: torch.Tensor, size: int) -> torch.Tensor:
    """An image smaller than a crop is scaled up until its short side is the crop's (rare; it blurs)."""
    from torchvision.transforms.v2.functional import resize

    h, w = x.shape[-2:]
    if min(h, w) >= size:
        return x
    return resize(x, [max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w)))])


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def train_view(x: torch.Tensor, view: View, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """One randomised training view of a uint8 (3, H, W) image: float (3, S, S), ImageNet-normalised."""
    from torchvision.transforms.v2 import functional as F

    scale = (
        _uniform(g, *aug.rescale_range)
        if aug.rescale and float(torch.rand((), generator=g)) < aug.rescale
        else 1.0
    )
    if view.recipe == "patches":
        side = min(round(view.size / scale), *x.shape[-2:]) if scale != 1.0 else view.size
        x = _at_least(x, side)
        top = int(torch.randint(0, x.shape[-2] - side + 1, (), generator=g))
        left = int(torch.randint(0, x.shape[-1] - side + 1, (), generator=g))
        x = F.crop(x, top, left, side, side)
        if side != view.size:
            x = F.resize(x, [view.size, view.size], antialias=True)
    else:
        if scale != 1.0:  # resampled first, as a re-posted image would be, then resized for the model
            h, w = x.shape[-2:]
            x = F.resize(x, [max(8, round(h * scale)), max(8, round(w * scale))], antialias=True)
        x = F.resize(x, [view.size, view.size], antialias=True)
    if aug.blur and float(torch.rand((), generator=g)) < aug.blur:
        x = F.gaussian_blur(x, [5, 5], [_uniform(g, *aug.blur_sigma)])
    if aug.jpeg and float(torch.rand((), generator=g)) < aug.jpeg:
        x = jpeg_round_trip(x, round(_uniform(g, *aug.jpeg_quality)))
    if aug.flips and float(torch.rand((), generator=g)) < 0.5:
        x = F.horizontal_flip(x)
    return _normalise(x)


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Save as JPEG at this quality and read back (with PIL: torchvision's JPEG codec is deprecated)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    return pil_to_tensor(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def grid_positions(length: int, side: int, count: int) -> list[int]:
    """`count` crop starts spread evenly over [0, length - side] (fewer when the crops would overlap
    more than they need to cover it)."""
    count = max(1, min(count, math.ceil(length / side)))
    if count == 1:
        return [(length - side) // 2]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def test_views(x: torch.Tensor, view: View) -> torch.Tensor:
    """The views a test image is classified by, float (k, 3, S, S): a grid of crops (patches; their
    logits are averaged) or the one resized image."""
    from torchvision.transforms.v2 import functional as F

    if view.recipe != "patches":
        return _normalise(F.resize(x, [view.size, view.size], antialias=True))[None]
    x = _at_least(x, view.size)
    per_side = max(1, math.isqrt(view.test_patches))
    tops = grid_positions(x.shape[-2], view.size, per_side)
    lefts = grid_positions(x.shape[-1], view.size, per_side)
    crops = [F.crop(x, t, left, view.size, view.size) for t in tops for left in lefts]
    return _normalise(torch.stack(crops))


class TrainViews(torch.utils.data.Dataset):
    """Item (row, sample seed) -> (view, label): the seed fixes the crop and augmentations."""

    def __init__(self, rows, labels: np.ndarray, view: View, aug: Augment):
        self.rows, self.labels, self.view, self.aug = rows.select_columns(["image"]), labels, view, aug

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        g = torch.Generator().manual_seed(seed)
        return train_view(decode(self.rows[int(i)]["image"]), self.view, self.aug, g), int(self.labels[i])


class TestViews(torch.utils.data.Dataset):
    """Item i -> (its test views, label); `collate_views` stacks the views of a batch of images."""

    def __init__(self, rows, labels: np.ndarray, view: View):
        self.rows, self.labels, self.view = rows.select_columns(["image"]), labels, view

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return test_views(decode(self.rows[int(i)]["image"]), self.view), int(self.labels[i])


def collate_views(items):
    views, labels = zip(*items, strict=True)
    counts = torch.tensor([len(v) for v in views])
    return torch.cat(views), counts, torch.tensor(labels)


class StepBatches(torch.utils.data.Sampler):
    """The training batches of steps start+1 .. steps: step s draws its rows and per-sample seeds from
    (seed, s) alone, so a run resumed at step s sees exactly the batches it would have seen."""

    def __init__(self, n: int, batch: int, seed: int, start: int, steps: int):
        self.n, self.batch, self.seed, self.start, self.steps = n, batch, seed, start, steps

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start + 1, self.steps + 1):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            rows = torch.randint(0, self.n, (self.batch,), generator=g).tolist()
            base = (self.seed * 1_000_003 + step) * 4096
            yield [(r, base + j) for j, r in enumerate(rows)]


# --- the trace benchmark -------------------------------------------------------------------------


def trace_images(
    base: np.ndarray, pipeline: str, factor: int, seed: int | list[int], strength: float = 1.0
) -> np.ndarray:
    """Upsample grey uint8 images (N, h, w) by `factor` through one pipeline, as uint8 (N, fh, fw, 3).

    Stand-ins for generators whose images differ only in their traces: the content (tinted, lightly
    noised base images, drawn from `seed`) is made the same way for every pipeline; what tells them
    apart is the upsampling kernel, a transposed convolution's checkerboard, JPEG blocks, sensor-like
    noise or sharpening, all at the pixel level, as the traces of real generators' decoders are.

    `strength` scales each pipeline's trace: the image is `neutral + strength * (pipeline - neutral)`,
    rounded once, where `neutral` is the same content upsampled by a Gaussian-smoothed nearest kernel
    that no pipeline uses. At 1 the pipeline's own output; at 0.1 its trace is a few grey levels, the
    regime of real generators that share a content distribution. The caller must give training and
    test images different seeds: the seed fixes the content noise and tint."""
    from scipy.ndimage import gaussian_filter

    if not 0 < strength <= 1:
        raise ValueError(f"strength {strength}: give a share in (0, 1]")
    seed = [seed] if isinstance(seed, int) else list(seed)
    rngs = [np.random.default_rng([*seed, i]) for i in range(len(base))]  # image i's draws, whatever N
    tint = np.stack([r.uniform(0.35, 1.0, 3) for r in rngs])[:, None, None, :]
    noise = np.stack([r.normal(0, 0.04, base.shape[1:]) for r in rngs])
    grey = base.astype(np.float32) / 255 * 0.85 + 0.1 + noise
    small = np.clip(grey[..., None] * tint * 255, 0, 255).round().astype(np.uint8)  # (N, h, w, 3)
    own = _pipeline(small, pipeline, factor, rngs).astype(np.float64)
    if strength == 1:
        return own.round().astype(np.uint8)
    blocks = small.repeat(factor, 1).repeat(factor, 2).astype(np.float64)
    neutral = gaussian_filter(blocks, sigma=(0, factor / 2, factor / 2, 0), mode="nearest")
    return np.clip(neutral + strength * (own - neutral), 0, 255).round().astype(np.uint8)


def _pipeline(small: np.ndarray, pipeline: str, factor: int, rngs: list) -> np.ndarray:
    from PIL import Image, ImageFilter

    h, w = small.shape[1:3]
    size = (w * factor, h * factor)
    if pipeline == "transposed_conv":  # a decoder's learned upsampling: stride = factor, kernel 2 x factor
        k = torch.from_numpy(np.random.default_rng(1234).uniform(0.2, 1.0, (2 * factor, 2 * factor)))
        k = (k / k.sum() * factor * factor).float()[None, None].repeat(3, 1, 1, 1)
        x = torch.from_numpy(small).permute(0, 3, 1, 2).float()
        y = torch.nn.functional.conv_transpose2d(x, k, stride=factor, padding=factor // 2, groups=3)
        y = y[..., : h * factor, : w * factor]
        return y.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    methods = {
        "nearest": Image.NEAREST,
        "bilinear": Image.BILINEAR,
        "bicubic": Image.BICUBIC,
        "lanczos": Image.LANCZOS,
        "bicubic_jpeg": Image.BICUBIC,
        "bilinear_noise": Image.BILINEAR,
        "bicubic_sharpen": Image.BICUBIC,
    }
    if pipeline not in methods:
        raise ValueError(f"pipeline {pipeline!r}: use transposed_conv or one of {', '.join(methods)}")
    method = methods[pipeline]
    out = []
    for img, rng in zip(small, rngs, strict=True):
        big = Image.fromarray(img).resize(size, method)
        if pipeline == "bicubic_jpeg":
            buf = io.BytesIO()
            big.save(buf, format="JPEG", quality=85)
            big = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        elif pipeline == "bicubic_sharpen":
            # at the scale of the upsampled structure: a 1-px mask on a 10x-smooth image changes ~1 % of
            # pixels by under a level, which is no trace at all (measured: 0.014 levels on average)
            big = big.filter(ImageFilter.UnsharpMask(radius=factor / 3, percent=100, threshold=0))
        arr = np.asarray(big)
        if pipeline == "bilinear_noise":
            arr = np.clip(arr + rng.normal(0, 3.0, arr.shape), 0, 255).round().astype(np.uint8)
        out.append(arr)
    return np.stack(out)
