"""feature_sweep: few-shot classification on a diffusion model's features, over timesteps and blocks,
against raw pixels and a VAE's latent on the same labelled subsets.

Method:
1. The model: a finished `images` run (model_run), one trained first (train: an images spec; the
   presets train an unconditional one, so no label reaches the features at any stage), or a published
   diffusers UNet (model: {pretrained: ...}). A class-conditional
   model is run at its null class.
2. Features: each image x_0 is noised to x_t with noise seeded by (seed, t, draw, image), the UNet runs
   once per t and forward hooks keep every block asked for, pooled (`avg`, or a k x k `grid<k>`);
   `a+b` concatenates blocks. Only the training images some k-shot subset uses, and the test split, are
   run. Features are cached under the store per (model weights, images, pooling, seed, draws) and t and
   block, so later runs reuse them. No label is passed to any of this.
3. Baselines on the same images: raw pixels, and the posterior mean of a small VAE (diffusers'
   AutoencoderKL) trained here on the same unlabelled training images (cached under the store too).
4. Probes: for each k (labelled images per class), `repeats` subsets of k images per class, the same
   subsets for every feature source (so sources compare paired); a standardised linear head (logistic
   regression) and a one-hidden-layer MLP fit on each subset and scored on the whole test split.
   Accuracy: mean over the repeats with its t-interval. The best diffusion setting per k against each
   baseline: the paired difference over the same subsets, with its interval.
5. Selection in the open: by default (select_on: val) `val_per_class` labelled training images per class
   are set aside before any subset is drawn, every probe is also scored on them, and the best setting
   is chosen on them, so the test interval of the chosen setting is not bent by the choice. select_on:
   test chooses on the test split (the optimistic protocol of most feature papers; recorded as such).
   Settings named beforehand (fixed:) are reported against each baseline beside the selected one.
Pictures: accuracy against t per block (at the headline k, one panel per head) with the baselines as
bands; accuracy against k for the best diffusion setting, the VAE and pixels; VAE reconstructions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from workbench.jobs.diffusion import image_model
from workbench.jobs.diffusion.config import Strict
from workbench.jobs.diffusion.image_model import DataSpec, WithImageModel
from workbench.jobs.diffusion.pretrained import check_data

# imported by run(); the worker loads them once, up front
PRELOAD = (
    *image_model.PRELOAD,
    "workbench.jobs.diffusion.features",
    "workbench.jobs.diffusion.vae",
    "workbench.jobs.metrics.probes",
    "workbench.jobs.metrics.stats",
    "sklearn.linear_model",
    "sklearn.neural_network",
    "scipy.stats",
    "matplotlib.pyplot",
)
HEADLINE = ("diffusion_accuracy", "pixels_accuracy", "vae_accuracy")  # at the headline k

if TYPE_CHECKING:
    import numpy as np

    from workbench.jobs.context import RunContext

TEST_IDS = 1 << 40  # feature-cache ids of test images start here (training images: their index)
BLOCK = re.compile(r"(down\d+|mid|up\d+)(\+(down\d+|mid|up\d+))*")
POOLING = re.compile(r"avg|grid[1-9]\d?")


class VAEOptions(Strict):
    channels: list[int] = Field(
        [32, 64, 64],
        min_length=1,
        max_length=5,
        description="per level; the latent is the image / 2**(levels-1)",
    )
    latent_channels: int = Field(4, ge=1, le=64)
    norm_groups: int = Field(8, ge=1, le=64)
    steps: int = Field(1000, ge=1, le=10_000_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=1.0)
    kl_weight: float = Field(1.0, ge=0, le=1e6, description="weight of the KL term (per pixel) in the loss")

    @model_validator(mode="after")
    def _groups(self):
        if bad := [c for c in self.channels if c % self.norm_groups]:
            raise ValueError(f"channels {bad} are not multiples of norm_groups ({self.norm_groups})")
        return self


class FixedSetting(Strict):
    t: int = Field(ge=0, description="a timestep of the sweep")
    block: str = Field(description="a block entry of the sweep")
    head: Literal["linear", "mlp"] | None = Field(None, description="default: every head of the sweep")


class Spec(WithImageModel):
    kind: Literal["feature_sweep"] = "feature_sweep"
    data: DataSpec | None = Field(
        None, description="the labelled images to probe (default: the model's own data); same image shape"
    )
    timesteps: list[int] = Field(
        [10, 50, 100, 200, 400, 700], min_length=1, max_length=64, description="noise levels t to sweep"
    )
    blocks: list[str] = Field(
        ["down1", "mid", "up0", "up1"],
        min_length=1,
        max_length=32,
        description="UNet blocks: down<i>, mid, up<i>; a+b concatenates their features",
    )
    pooling: str = Field("avg", description="avg (per channel) or grid<k> (k x k cells per channel)")
    draws: int = Field(1, ge=1, le=64, description="noise draws per image and t, features averaged")
    ks: list[int | Literal["all"]] = Field(
        [1, 5, 10], min_length=1, max_length=16, description="labelled images per class; all: the whole split"
    )
    heads: list[Literal["linear", "mlp"]] = Field(["linear", "mlp"], min_length=1)
    repeats: int = Field(
        5, ge=2, le=100, description="labelled subsets per k (the draws behind each interval)"
    )
    baselines: list[Literal["pixels", "vae"]] = Field(["pixels", "vae"], max_length=2)
    vae: VAEOptions = VAEOptions()
    batch_size: int = Field(256, ge=1, le=100_000, description="images per forward pass")
    select_on: Literal["val", "test"] = Field(
        "val",
        description="where the best setting is chosen: val (labelled training images set aside, never "
        "probed on) or test (optimistic: the reported interval ignores the choice)",
    )
    val_per_class: int = Field(
        20, ge=1, le=100_000, description="validation images per class (select_on: val)"
    )
    fixed: list[FixedSetting] = Field(
        [],
        max_length=32,
        description="settings named beforehand, each reported with paired intervals against every baseline",
    )
    allow_labelled_model: bool = Field(
        False,
        description="accept a class-conditional model: its features come from a network trained with "
        "every training label (pixels and the VAE see none); every diffusion row is then marked "
        "model_saw_labels",
    )

    PRESETS = {
        # A tiny unconditional digits model first, then a 3 x 3 sweep: under a minute on 2 CPU cores.
        "smoke": {
            "train": {
                "kind": "images",
                "preset": "smoke",
                "timesteps": 200,
                "model": {"conditional": False},
                "sample": {"guidance_scales": [0.0], "n_samples": 20, "eval_sets": 2},
            },
            "timesteps": [5, 20, 60],
            "blocks": ["down1", "mid", "up0"],
            "ks": [1, 5, 10],
            "repeats": 3,
            "vae": {"channels": [16, 32], "steps": 150, "batch_size": 64},
        },
        # The images paper model (MNIST), unconditional, then 8 timesteps x 7 blocks; on one GPU.
        "paper": {
            "train": {"kind": "images", "preset": "paper", "model": {"conditional": False}},
            "timesteps": [1, 10, 25, 50, 100, 200, 400, 700],
            "blocks": ["down0", "down1", "down2", "mid", "up0", "up1", "up2"],
            "ks": [1, 5, 10, 32, 100, "all"],
            "repeats": 5,
            "val_per_class": 100,
            "vae": {"steps": 5000, "batch_size": 256},
            "batch_size": 1000,
        },
    }

    @field_validator("blocks")
    @classmethod
    def _block_names(cls, blocks):
        if bad := [b for b in blocks if not BLOCK.fullmatch(b)]:
            raise ValueError(f"{bad}: name blocks down<i>, mid or up<i>, or join them with + (mid+up0)")
        if len(set(blocks)) != len(blocks):
            raise ValueError("blocks are listed twice")
        return blocks

    @field_validator("pooling")
    @classmethod
    def _pooling(cls, pooling):
        if not POOLING.fullmatch(pooling):
            raise ValueError(f"{pooling!r}: use avg or grid<k> with k from 1 to 99 (grid2, grid4)")
        return pooling

    @model_validator(mode="after")
    def _consistent(self):
        if self.timesteps != sorted(set(self.timesteps)) or self.timesteps[0] < 0:
            raise ValueError("timesteps must be distinct, increasing and at least 0, e.g. [10, 100, 400]")
        numbers = [k for k in self.ks if k != "all"]
        if numbers != sorted(set(numbers)) or (numbers and numbers[0] < 1) or self.ks.count("all") > 1:
            raise ValueError("ks must be distinct increasing counts of at least 1, optionally ending in all")
        if "all" in self.ks and self.ks[-1] != "all":
            raise ValueError("ks: put all last")
        for f in self.fixed:
            if (
                f.t not in self.timesteps
                or f.block not in self.blocks
                or (f.head and f.head not in self.heads)
            ):
                raise ValueError(
                    f"fixed: t={f.t} {f.block}{' ' + f.head if f.head else ''} is not swept; name a t of "
                    f"{self.timesteps}, a "
                    f"block of {self.blocks}" + (f" and a head of {self.heads}" if f.head else "")
                )
        if len({(f.t, f.block, f.head) for f in self.fixed}) != len(self.fixed):
            raise ValueError("fixed: a setting is named twice")
        if self.train is not None:  # the model is known now: check what it must have
            check_model(self, self.train.timesteps, len(self.train.model.channels))
            check_labels(self, self.train.model.conditional)
        if self.model is not None:
            if self.data is None and self.model.data is None:
                raise ValueError("data: name the labelled images to probe (or model.data: the model's own)")
            if (found := self.model.found()) is not None:  # a folder here, or in the Hub cache
                check_model(self, found.timesteps, found.levels)
                check_labels(self, found.classes(self.model) > 0)
                check_data(found, self.data, "data")
        return self


def check_labels(spec: Spec, conditional: bool) -> None:
    """A class-conditional model saw every training label: refused unless the spec allows it."""
    if conditional and not spec.allow_labelled_model:
        raise ValueError(
            "the model is class-conditional: it was trained with every training label, so its features "
            "are not few-shot (pixels and the VAE see k labels per class). Use an unconditional model "
            "(model: {conditional: false}), or set allow_labelled_model: true to compare anyway, marked"
        )


def check_model(spec: Spec, timesteps: int, levels: int) -> None:
    """The sweep's timesteps and blocks exist in a model of `timesteps` and `levels` UNet levels."""
    if spec.timesteps[-1] >= timesteps:
        raise ValueError(
            f"timesteps go to {spec.timesteps[-1]}; the model's chain has t = 0 to {timesteps - 1}"
        )
    names = {"mid", *(f"down{i}" for i in range(levels)), *(f"up{i}" for i in range(levels))}
    if missing := sorted({b for entry in spec.blocks for b in entry.split("+")} - names):
        raise ValueError(
            f"blocks {missing}: the model has {levels} levels, so down0-down{levels - 1}, mid, up0-up{levels - 1}"
        )


def run(ctx: RunContext, spec: Spec) -> None:
    """The paper's steps: the model and its data, the labelled subsets (validation set aside first),
    diffusion features per t and block (cached) next to the baselines', every probe on the same
    subsets, then the settings chosen and compared with paired intervals."""
    import numpy as np

    source, data = model_and_data(ctx, spec)
    y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
    val_idx, subsets = labelled_subsets(y_train, spec)
    used = np.unique(np.concatenate([idx for sets in subsets.values() for idx in sets] + [val_idx]))
    ctx.event(
        f"{data.name}: {len(used)} labelled training images in {sum(len(s) for s in subsets.values())} "
        f"subsets (k = {', '.join(map(str, spec.ks))})"
        + (f" and {len(val_idx)} set aside to choose on" if len(val_idx) else "")
        + f", {len(y_test)} test images"
    )
    n_probes = (len(spec.timesteps) * len(spec.blocks) + len(spec.baselines)) * len(spec.heads) * len(subsets)
    ctx.phase("extracting features", len(spec.timesteps))
    sources = features(ctx, spec, source.model, source.schedule, data, used, Bar(ctx, len(spec.timesteps)))
    ctx.phase("probing", n_probes)
    rows, per_repeat = probe_sources(
        ctx, spec, sources, data, used, val_idx, subsets, source.model, Bar(ctx, n_probes)
    )
    ctx.table("probes", rows)
    summarise(
        ctx, spec, rows, per_repeat, labelled=source.model.num_classes > 0, validation_images=len(val_idx)
    )


class Bar:
    """A phase's progress bar: feature timesteps, or probes."""

    def __init__(self, ctx: RunContext, total: int):
        self.ctx, self.total, self.done = ctx, total, 0

    def step(self, *_) -> None:
        self.done += 1
        self.ctx.progress(self.done, self.total)


def model_and_data(ctx: RunContext, spec: Spec):
    """(the image model's source, the images to probe: the model's own data, or the spec's `data`)."""
    source = image_model.source_model(ctx, spec)
    if spec.train is None:  # a spec with train: was checked when it was validated
        try:
            check_model(spec, source.schedule.config.num_train_timesteps, len(source.model.unet.down_blocks))
            check_labels(spec, source.model.num_classes > 0)
            if source.model.num_classes and source.model.null_class is None:
                raise ValueError(
                    "features are taken without labels, at the null class, and this class-conditional model "
                    "has none (model.class_null: true if its last class is the unconditional one)"
                )
        except ValueError as e:
            raise ValueError(
                f"{'model_run' if spec.model_run else 'model'} {spec.model_run or spec.model}: {e}"
            ) from None
    return source, source.load_images(spec.data)


def features(ctx: RunContext, spec: Spec, model, schedule, data, used, bar: Bar) -> dict:
    """{(source, t, block): features of the `used` training images then every test image}: diffusion
    features per t and block (cached, one forward pass per image and t for every block), then each
    baseline's."""
    import numpy as np
    import torch

    from workbench.jobs.diffusion.features import FeatureCache, cached_extract

    ids = np.concatenate([used, TEST_IDS + np.arange(len(data.y_test))])
    images = np.concatenate([data.x_train.numpy()[used], data.x_test.numpy()])
    atoms = list(dict.fromkeys(b for entry in spec.blocks for b in entry.split("+")))
    fingerprint = images_fingerprint(data)  # hashes every image once: the feature and VAE caches' key
    cache = FeatureCache(
        ctx.cache_dir("features"),
        model=image_model.weights_digest(model),
        images=fingerprint,
        pooling=spec.pooling,
        seed=spec.seed,
        draws=spec.draws,
    )
    feats, passes = cached_extract(
        cache,
        model,
        schedule,
        torch.from_numpy(images),
        ids,
        spec.timesteps,
        atoms,
        spec.pooling,
        spec.seed,
        spec.draws,
        spec.batch_size,
        on_timestep=bar.step,
    )
    needed = len(spec.timesteps) * spec.draws * len(ids)
    ctx.event(
        f"diffusion features of {len(atoms)} blocks at {len(spec.timesteps)} timesteps: "
        f"{passes} image forward passes ({passes / len(ids):.2f} per image; "
        f"{needed - passes} of {needed} from the cache)"
    )
    ctx.summary(feature_forward_passes=passes, feature_images=len(ids), feature_passes_cached=needed - passes)
    sources: dict[tuple[str, int | None, str], np.ndarray] = {}
    for t in spec.timesteps:
        for entry in spec.blocks:
            sources[("diffusion", t, entry)] = np.concatenate(
                [feats[(t, b)] for b in entry.split("+")], axis=1
            )
    if "pixels" in spec.baselines:
        sources[("pixels", None, "")] = images.reshape(len(images), -1)
    if "vae" in spec.baselines:
        sources[("vae", None, "")] = vae_features(ctx, spec, data, fingerprint, images)
    return sources


def probe_sources(ctx: RunContext, spec: Spec, sources, data, used, val_idx, subsets, model, bar: Bar):
    """(rows of the `probes` table, each setting's per-repeat accuracies): every source, head and k on
    the same subsets, each probe also scored on the validation images."""
    import numpy as np

    from workbench.jobs.context import RunCancelled
    from workbench.jobs.metrics.probes import probe

    y_train, y_test, n_train = data.y_train.numpy(), data.y_test.numpy(), len(used)
    rows, per_repeat = [], {}
    val_local = np.searchsorted(used, val_idx)
    for (kind, t, entry), x in sources.items():
        train_x, test_x = x[:n_train], x[n_train:]
        val = (train_x[val_local], y_train[val_idx]) if len(val_idx) else None
        for head in spec.heads:
            for k, label in zip(subsets, spec.ks, strict=True):  # spec.ks in order, `all` as None
                if ctx.should_stop():
                    raise RunCancelled
                local = [np.searchsorted(used, idx) for idx in subsets[k]]  # rows of x[:n_train]
                result = probe(train_x, y_train[used], test_x, y_test, local, head, k, spec.seed, val)
                acc = result.accuracy
                per_repeat[(kind, t, entry, head, label)] = result.accuracies
                rows.append(
                    {
                        "source": kind,
                        "t": t,
                        "block": entry or None,
                        "pooling": spec.pooling if kind == "diffusion" else None,
                        "head": head,
                        "k": label,
                        "features": x.shape[1],
                        "accuracy_mean": acc.value,
                        "accuracy_ci_low": acc.low,
                        "accuracy_ci_high": acc.high,
                        "repeats": acc.n,
                        **(
                            {"val_accuracy_mean": result.val_accuracy.value}
                            if result.val_accuracy is not None
                            else {}
                        ),
                        "model_saw_labels": kind == "diffusion" and model.num_classes > 0,
                    }
                )
                bar.step()
        ctx.event(f"probed {kind}{f' t={t} {entry}' if t is not None else ''}")
    return rows, per_repeat


def labelled_subsets(y_train: np.ndarray, spec: Spec) -> tuple[np.ndarray, dict]:
    """(validation indices, {k: the repeats' k-shot subsets}; k None: the whole split) over the training
    labels. select_on: val sets the validation images aside first, so no subset (nor `all`) holds one."""
    import numpy as np

    from workbench.jobs.metrics.probes import kshot_subsets, validation_split

    if spec.select_on == "val":
        val_idx, pool = validation_split(y_train, spec.val_per_class, spec.seed)
    else:
        val_idx, pool = np.array([], dtype=np.int64), np.arange(len(y_train))
    ks = [None if k == "all" else k for k in spec.ks]
    return val_idx, {
        k: [pool[i] for i in kshot_subsets(y_train[pool], k, spec.repeats, spec.seed)] for k in ks
    }


def images_fingerprint(data) -> str:
    """Identifies the images (not their labels: features never depend on those)."""
    import hashlib

    h = hashlib.sha256(f"{data.name}{data.shape}".encode())
    h.update(data.x_train.numpy().tobytes())
    h.update(data.x_test.numpy().tobytes())
    return h.hexdigest()[:20]


def vae_features(ctx: RunContext, spec: Spec, data, fingerprint: str, images: np.ndarray) -> np.ndarray:
    """Train (or reuse) the VAE on the unlabelled training images; its posterior means of `images`."""
    import torch

    from workbench.jobs.diffusion import vae
    from workbench.jobs.figures import grid_image

    o = spec.vae
    cfg = vae.VAEConfig(
        tuple(o.channels),
        o.latent_channels,
        o.norm_groups,
        o.steps,
        o.batch_size,
        o.lr,
        o.kl_weight,
        spec.seed,
    )
    if data.shape[-1] % 2 ** (len(cfg.channels) - 1):
        raise ValueError(
            f"vae.channels: {len(cfg.channels)} levels cannot halve {data.shape[-1]}x{data.shape[-1]} images "
            f"{len(cfg.channels) - 1} times; use fewer levels"
        )
    trained = vae.train_or_load(
        ctx.cache_dir("vae"),
        fingerprint,
        data.x_train,
        data.x_test,
        cfg,
        ctx.device,
        on_step=lambda step, losses: ctx.log(step, **{f"vae/{k}": v for k, v in losses.items()}),
        should_stop=ctx.should_stop,
    )
    shown = data.x_test[:8]
    ctx.image(
        "vae_reconstructions",
        None,
        grid_image(torch.cat([shown, vae.reconstruct(trained.model, shown, ctx.device)]), 2, len(shown)),
    )
    features = vae.encode(trained.model, torch.from_numpy(images), ctx.device)
    ctx.event(
        f"VAE {'from the cache' if trained.cached else 'trained'}: {o.steps} steps, test reconstruction "
        f"MSE {trained.reconstruction_mse:.4f} per pixel, latent of {features.shape[1]} numbers"
    )
    ctx.summary(vae_reconstruction_mse=trained.reconstruction_mse, vae_latent_size=features.shape[1])
    return features


def chosen_by(spec: Spec):
    """The score a setting is chosen by: its validation accuracy (select_on: val) or its test accuracy."""
    column = "val_accuracy_mean" if spec.select_on == "val" else "accuracy_mean"
    return lambda r: r[column]


def summarise(
    ctx: RunContext, spec: Spec, rows: list[dict], per_repeat: dict, labelled: bool, validation_images: int
) -> None:
    """summary.best per k; the chosen diffusion setting and every fixed one against each baseline
    (paired); the pictures."""
    from workbench.jobs.metrics.stats import mean_ci, paired_ci

    score = chosen_by(spec)

    def compared(label, head, t, block, setting: str) -> list[dict]:
        out = []
        for base in spec.baselines:
            diff = paired_ci(
                per_repeat[("diffusion", t, block, head, label)], per_repeat[(base, None, "", head, label)]
            )
            out.append(
                {
                    "k": label,
                    "head": head,
                    "setting": setting,
                    "t": t,
                    "block": block,
                    "versus": base,
                    "model_saw_labels": labelled,
                    "selected_on": spec.select_on if setting == "selected" else None,
                    **diff.columns("diffusion_minus_baseline"),
                    "verdict": "diffusion better"
                    if diff.low > 0
                    else "baseline better"
                    if diff.high < 0
                    else "unresolved",
                }
            )
        return out

    best, comparisons = {}, []
    for label in spec.ks:
        at_k = [r for r in rows if r["k"] == label]
        top = max(at_k, key=score)
        best[str(label)] = {
            "source": top["source"],
            "t": top["t"],
            "block": top["block"],
            "head": top["head"],
            "accuracy_mean": top["accuracy_mean"],
            "accuracy_ci": [top["accuracy_ci_low"], top["accuracy_ci_high"]],
        }
        for head in spec.heads:
            d = max((r for r in at_k if r["source"] == "diffusion" and r["head"] == head), key=score)
            comparisons += compared(label, head, d["t"], d["block"], "selected")
            for f in spec.fixed:
                if f.head in (None, head):
                    comparisons += compared(label, head, f.t, f.block, "fixed")
    ctx.table("comparisons", comparisons)
    headline = 10 if 10 in spec.ks else max((k for k in spec.ks if k != "all"), default="all")
    at = [r for r in rows if r["k"] == headline]
    top = max((r for r in at if r["source"] == "diffusion"), key=score)
    values = {
        # select_on: test picks on the split it reports: the interval is that setting's, not the choice's
        "selected_on": spec.select_on,
        "validation_images": validation_images,
        "model_saw_labels": labelled,
        "headline_k": headline,
        "best": best,
        "diffusion_setting": f"t={top['t']} {top['block']} {top['head']}",
    }
    values.update(
        mean_ci(per_repeat[("diffusion", top["t"], top["block"], top["head"], headline)]).summary(
            "diffusion_accuracy"
        )
    )
    for base in spec.baselines:
        values.update(
            mean_ci(per_repeat[(base, None, "", top["head"], headline)]).summary(f"{base}_accuracy")
        )
        c = next(
            c
            for c in comparisons
            if c["k"] == headline
            and c["head"] == top["head"]
            and c["versus"] == base
            and c["setting"] == "selected"
        )
        values[f"diffusion_minus_{base}"] = c["diffusion_minus_baseline"]
        values[f"diffusion_minus_{base}_ci"] = [
            c["diffusion_minus_baseline_ci_low"],
            c["diffusion_minus_baseline_ci_high"],
        ]
    if spec.fixed:  # at the headline k: each fixed setting's accuracy and its differences, all paired
        values["fixed"] = [
            {
                "setting": f"t={c['t']} {c['block']} {c['head']}",
                "versus": c["versus"],
                "diffusion_minus_baseline": c["diffusion_minus_baseline"],
                "diffusion_minus_baseline_ci": [
                    c["diffusion_minus_baseline_ci_low"],
                    c["diffusion_minus_baseline_ci_high"],
                ],
            }
            for c in comparisons
            if c["k"] == headline and c["setting"] == "fixed"
        ]
    ctx.summary(**values)
    ctx.image("accuracy_vs_t", None, accuracy_vs_t(rows, spec, headline))
    ctx.image("accuracy_vs_k", None, accuracy_vs_k(rows, spec, top["head"]))


def _errorbar(ax, xs, rows, **kw):
    ys = [r["accuracy_mean"] for r in rows]
    low = [y - r["accuracy_ci_low"] if r["repeats"] > 1 else 0 for y, r in zip(ys, rows, strict=True)]
    high = [r["accuracy_ci_high"] - y if r["repeats"] > 1 else 0 for y, r in zip(ys, rows, strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, **kw)


def accuracy_vs_t(rows: list[dict], spec: Spec, k):
    """Accuracy against t, one line per block and one panel per head, at k labels per class; baselines
    as bands (their 95 % intervals)."""
    from workbench.jobs.figures import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(spec.heads), figsize=(5.5 * len(spec.heads), 4), squeeze=False)
    for ax, head in zip(axes[0], spec.heads, strict=True):
        mine = [r for r in rows if r["k"] == k and r["head"] == head]
        for entry in spec.blocks:
            line = sorted(
                (r for r in mine if r["block"] == entry and r["source"] == "diffusion"), key=lambda r: r["t"]
            )
            _errorbar(ax, [max(r["t"], 0.5) for r in line], line, label=entry)
        for base, color in (("pixels", "tab:gray"), ("vae", "tab:green")):
            for r in (r for r in mine if r["source"] == base):
                ax.axhspan(
                    r["accuracy_ci_low"],
                    r["accuracy_ci_high"],
                    color=color,
                    alpha=0.25,
                    label=f"{base} (95 % CI)",
                )
                ax.axhline(r["accuracy_mean"], color=color, linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel("timestep t (log)")
        ax.set_ylabel(f"test accuracy, {k} labels per class")
        ax.set_title(f"{head} head, {spec.pooling} pooling")
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def accuracy_vs_k(rows: list[dict], spec: Spec, head: str):
    """Accuracy against labels per class: the best diffusion setting at each k, the VAE and pixels."""
    from workbench.jobs.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    numbers = [k for k in spec.ks if k != "all"]
    for source in ("diffusion", *spec.baselines):
        line = [
            max(
                (r for r in rows if r["k"] == k and r["source"] == source and r["head"] == head),
                key=chosen_by(spec),
            )
            for k in numbers
        ]
        _errorbar(
            ax,
            numbers,
            line,
            label=source + (f" (t, block chosen on {spec.select_on} per k)" if source == "diffusion" else ""),
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled images per class (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{head} head")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig
