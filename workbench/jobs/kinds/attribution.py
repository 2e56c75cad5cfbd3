"""attribution: which generator made this image? A classifier over generators (DRAGON's 25 diffusion
models, folders of images, or the workbench's own image runs), its accuracy with intervals, the model
saved for `workbench attribute` and `workbench publish`.

Method:
1. Data (jobs.data.attribution): training and test images with their generator and prompt; the
   validation split is held out from training by prompt (no prompt in both), the test split is the
   source's own (DRAGON's test, a folder's test/, fresh draws for the zoo and the trace benchmark).
2. Recipes: `spectrum`, the spectral baseline (each image's mean log-DCT spectrum over a grid of native
   crops, a standardised logistic regression; seconds); `patches` trains on native-resolution random
   crops (the generators' traces survive) and classifies a test image by the mean logits of a grid of
   crops; `resize224` resizes whole images to 224 x 224 (the ImageNet recipe; resizing down erases
   high-frequency traces). Backbones: a small patch CNN from scratch, behind a high-pass `front` (SRM
   kernels or Bayar's constrained convolution: without one it stays at chance on faint traces), or
   torchvision ResNet18/50 (ImageNet weights when they can be had).
   Before training, the files' size, format and mode are checked for a label shortcut (`files` table,
   `size_by_class`); `data.normalise` re-encodes every image.
3. Training: AdamW, warm-up and cosine decay, bf16 on CUDA, a fixed step budget with early stopping on
   validation top-1 (the best validation weights are kept), checkpoints at each evaluation.
4. Results on the test split: top-1 and top-5 accuracy (Wilson intervals, n = test images), macro-F1
   (bootstrap interval over test images), per-class accuracy, the confusion matrix. Several recipes in
   one run are trained on the same splits and compared on the same test images: the difference in top-1
   comes with a paired interval. The headline is the recipe with the best *validation* top-1, so the
   test split is not used to choose it.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from workbench.jobs.diffusion.config import SamplerSpec, Strict, check_guidance
from workbench.jobs.diffusion.pretrained import PretrainedModel
from workbench.jobs.spec import BaseSpec, ExistingPath, RunName, RunRef

PRELOAD = (
    "workbench.jobs.classify",
    "workbench.jobs.data.attribution",
    "workbench.jobs.data.images",
    "workbench.jobs.metrics.stats",
    "datasets",
    "torchvision.transforms.v2",
    "sklearn.metrics",
    "matplotlib.pyplot",
)
HEADLINE = ("top1", "macro_f1", "top5")

if TYPE_CHECKING:
    import numpy as np

    from workbench.jobs.context import RunContext

PIPELINES = (  # the trace benchmark's classes (jobs.data.attribution.trace_images)
    "nearest",
    "bilinear",
    "bicubic",
    "lanczos",
    "transposed_conv",
    "bicubic_jpeg",
    "bilinear_noise",
    "bicubic_sharpen",
)


def _shard_files(patterns: list[str], info: ValidationInfo) -> list[str]:
    """Paths or glob patterns, relative to the spec file, each matching at least one file."""
    base = Path((info.context or {}).get("base_dir") or Path.cwd())
    files = []
    for pattern in patterns:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base / full
        found = sorted(glob.glob(str(full)))
        if not found:
            raise ValueError(f"{pattern!r} matches no file (looked for {full})")
        files += [str(Path(f).resolve()) for f in found]
    return files


ShardFiles = Annotated[list[str], Field(min_length=1), AfterValidator(_shard_files)]
PerClass = Field(None, ge=1, le=10_000_000, description="at most this many images per generator")


class Normalise(Strict):
    """Re-encode every image (training and test) before anything sees it, so that a generator's file
    format or size cannot stand in for its traces. Resizing resamples: it blurs traces too."""

    size: int | None = Field(None, ge=8, le=4096, description="resize and centre-crop to size x size")
    format: Literal["png"] = "png"


class SourceBase(Strict):
    normalise: Normalise | None = Field(None, description="re-encode images (png; a size) first")


class DragonSource(SourceBase):
    source: Literal["dragon"]
    config: Literal["ExtraSmall", "Small", "Regular", "Large", "ExtraLarge"] = "Regular"
    repo: str = Field("lesc-unifi/dragon", description="the Hugging Face dataset")
    train_per_class: int | None = PerClass
    test_per_class: int | None = PerClass


class ShardsSource(SourceBase):
    source: Literal["shards"]
    train: ShardFiles = Field(
        description="DRAGON-schema WebDataset .tar files or globs (relative to the spec)"
    )
    test: ShardFiles
    train_per_class: int | None = PerClass
    test_per_class: int | None = PerClass


class FolderSource(SourceBase):
    source: Literal["imagefolder"]
    path: ExistingPath = Field(description="one subfolder per generator (or train/ and test/ above them)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out as test when there is no test/")


class ZooMember(Strict):
    """One class of a zoo: a finished images run or a published model, drawn with its own sampler and
    guidance if given (DRAGON's generators differ in sampler, steps and guidance as much as in weights)."""

    run: RunRef | None = None
    model: PretrainedModel | None = Field(
        None, description="or a published diffusers model: {pretrained: OWNER/NAME or a folder}"
    )
    sampler: SamplerSpec | None = Field(None, description="default: the zoo's sampler")
    guidance_scale: float | None = Field(None, ge=0, le=100, description="default: the zoo's guidance")
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[\x20-\x7e]+$")

    @model_validator(mode="after")
    def _one_model(self):
        if (self.run is None) == (self.model is None):
            raise ValueError("give each member run (a finished images run) or model (a published one)")
        return self

    @property
    def key(self) -> int | RunName | str:
        """What it is drawn from: the run, or the published model's place."""
        return self.run if self.model is None else str(self.model)


class ZooSource(SourceBase):
    source: Literal["zoo"]
    runs: list[int | RunName | ZooMember] = Field(
        min_length=2,
        description="the generators, one class each: a succeeded images run (its id, {experiment, name}), "
        "or {run or model: {pretrained: ...}, sampler, guidance_scale, name}",
    )
    train_per_class: int = Field(200, ge=2, le=1_000_000, description="images drawn per run for training")
    test_per_class: int = Field(100, ge=1, le=1_000_000, description="fresh images per run for the test")
    sampler: SamplerSpec = SamplerSpec(name="ddim", steps=50)
    guidance_scale: float = Field(2.0, ge=0, le=100)
    batch_size: int = Field(500, ge=1, le=100_000)

    @property
    def members(self) -> list[ZooMember]:
        """Every class with the zoo's defaults filled in."""
        return [
            ZooMember(
                run=m.run,
                model=m.model,
                sampler=m.sampler or self.sampler,
                guidance_scale=self.guidance_scale if m.guidance_scale is None else m.guidance_scale,
                name=m.name,
            )
            for m in (r if isinstance(r, ZooMember) else ZooMember(run=r) for r in self.runs)
        ]

    @model_validator(mode="after")
    def _distinct(self):
        drawn = [(m.key, m.sampler, m.guidance_scale) for m in self.members]
        if len(set(map(repr, drawn))) != len(drawn):
            raise ValueError("runs: a run is listed twice with the same sampler and guidance")
        names = [m.name for m in self.members if m.name]
        if len(set(names)) != len(names):
            raise ValueError("runs: two members have the same name")
        return self


class TracesSource(SourceBase):
    """The offline benchmark: the same kind of content through different upsampling pipelines."""

    source: Literal["traces"]
    base: Literal["digits", "mnist", "fashion_mnist"] = "digits"
    path: ExistingPath | None = Field(None, description="the base dataset's .npz (mnist, fashion_mnist)")
    pipelines: list[Literal[PIPELINES]] = Field(  # type: ignore[valid-type]
        list(PIPELINES), min_length=2, description="one class per pipeline"
    )
    factor: int = Field(4, ge=2, le=16, description="upsampling factor (digits 8 px -> 32 px at 4)")
    strength: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of each pipeline's trace kept (1: its own output; 0.1: a few grey levels)",
    )
    train_per_class: int = Field(150, ge=2, le=1_000_000)
    test_per_class: int = Field(100, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _distinct(self):
        if len(set(self.pipelines)) != len(self.pipelines):
            raise ValueError("pipelines: a pipeline is listed twice")
        return self


Source = Annotated[
    DragonSource | ShardsSource | FolderSource | ZooSource | TracesSource, Field(discriminator="source")
]


class RecipeSpec(Strict):
    name: Literal["patches", "resize224", "spectrum"] = "patches"
    backbone: Literal["patch_cnn", "resnet18", "resnet50", "spectrum"] = Field(
        "patch_cnn", description="spectrum goes with the spectrum recipe (and is set by it)"
    )
    pretrained: str = Field(
        "none",
        description="none, imagenet (torchvision's weights, cached or downloaded), or a state dict path",
    )
    front: Literal["none", "srm", "bayar"] = Field(
        "none",
        description="patch_cnn: a high-pass first layer (fixed SRM kernels, or Bayar's constrained conv)",
    )
    patch_size: int = Field(
        64, ge=8, le=1024, description="patches, spectrum: the crop side, in native pixels"
    )
    test_patches: int = Field(
        16, ge=1, le=4096, description="patches, spectrum: at most this many crops per test image"
    )
    width: int = Field(32, ge=4, le=512, description="patch_cnn: channels of its first stage")
    steps: int | None = Field(
        None, ge=1, le=10_000_000, description="this recipe's step budget (default: train.steps)"
    )

    @model_validator(mode="before")
    @classmethod
    def _spectrum_backbone(cls, data):
        if isinstance(data, dict) and data.get("name") == "spectrum" and "backbone" not in data:
            return {**data, "backbone": "spectrum"}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if (self.name == "spectrum") != (self.backbone == "spectrum"):
            raise ValueError("backbone: spectrum goes with the spectrum recipe, and only with it")
        if self.backbone in ("patch_cnn", "spectrum") and self.pretrained != "none":
            raise ValueError(f"pretrained: the {self.backbone} model is trained from scratch (use none)")
        if self.front != "none" and self.backbone != "patch_cnn":
            raise ValueError("front: a high-pass front end is for the patch_cnn backbone")
        return self

    @property
    def view(self):
        """How this recipe sees an image (jobs.data.attribution.View)."""
        from workbench.jobs.data.attribution import View

        if self.name == "resize224":
            return View("resize224", 224)
        return View("patches", self.patch_size, self.test_patches)

    @property
    def label(self) -> str:
        if self.name == "spectrum":
            return f"spectrum-{self.patch_size}"
        size = f"-{self.patch_size}" if self.name == "patches" else ""
        weights = (
            "-imagenet"
            if self.pretrained == "imagenet"
            else "-pretrained"
            if self.pretrained != "none"
            else ""
        )
        front = f"-{self.front}" if self.front != "none" else ""
        # what else tells two recipes apart, only when it departs from the default
        width = f"-w{self.width}" if self.backbone == "patch_cnn" and self.width != 32 else ""
        steps = f"-{self.steps}steps" if self.steps else ""
        return f"{self.name}{size}-{self.backbone}{front}{width}{weights}{steps}"

    def build(self, num_classes: int):
        from workbench.jobs.classify import build_attributor

        return build_attributor(
            self.backbone, num_classes, self.width, self.pretrained, self.front, self.patch_size
        )


class AugmentSpec(Strict):
    flips: bool = Field(True, description="random horizontal flips")
    jpeg: float = Field(0.0, ge=0, le=1, description="probability of a JPEG round trip (robustness)")
    jpeg_quality: tuple[int, int] = (65, 100)
    blur: float = Field(0.0, ge=0, le=1, description="probability of a Gaussian blur")
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    rescale: float = Field(0.0, ge=0, le=1, description="probability of resampling by a random factor")
    rescale_range: tuple[float, float] = (0.5, 1.5)

    @model_validator(mode="after")
    def _ranges(self):
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError("jpeg_quality: give [low, high] within 1-100")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError("blur_sigma: give [low, high] above 0")
        if not 0 < self.rescale_range[0] <= self.rescale_range[1]:
            raise ValueError("rescale_range: give [low, high] above 0")
        return self


class TrainSpec(Strict):
    steps: int = Field(
        3000, ge=1, le=10_000_000, description="the most optimizer steps (early stopping may end sooner)"
    )
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(250, ge=1, description="validate (and checkpoint) every so many steps")
    patience: int = Field(
        4, ge=0, description="stop after this many validations without a better top-1 (0: never)"
    )
    max_val_images: int = Field(2000, ge=1, description="validate on at most this many images (seeded)")
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0, le=64, description="image-decoding processes (0: in the run's process)")
    mixed_precision: bool = Field(True, description="bf16 autocast on CUDA")


class Spec(BaseSpec):
    kind: Literal["attribution"] = "attribution"
    data: Source = TracesSource(source="traces")
    classes: list[str] | None = Field(
        None, min_length=2, description="these generators only, in this order (default: all, sorted)"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of training prompts held out for validation"
    )
    recipes: list[RecipeSpec] = Field(
        [RecipeSpec()], min_length=1, max_length=8, description="trained on the same splits and compared"
    )
    augment: AugmentSpec = AugmentSpec()
    train: TrainSpec = TrainSpec()

    PRESETS = {
        # four upsampling pipelines on sklearn's digits (8 -> 32 px) with a fifth of their traces kept: the
        # spectral baseline next to the patch CNN with Bayar's constrained first layer, about 20 s
        "smoke": {
            "data": {
                "source": "traces",
                "base": "digits",
                "pipelines": ["nearest", "bilinear", "bicubic", "transposed_conv"],
                "factor": 4,
                "strength": 0.2,
                "train_per_class": 120,
                "test_per_class": 60,
            },
            "recipes": [
                {"name": "spectrum", "patch_size": 8, "test_patches": 16},
                {"name": "patches", "patch_size": 16, "width": 16, "test_patches": 4, "front": "bayar"},
            ],
            "train": {"steps": 200, "batch_size": 32, "lr": 3e-3, "warmup_steps": 20, "eval_every": 50},
        },
        # DRAGON Regular on one GPU: the recipes that find faint traces (the spectral baseline over the
        # whole image, native 64-px patches into a wider patch CNN behind Bayar's constrained layer, as
        # RPA trains from scratch on native patches) next to the seed project's resize224 ResNet50 from
        # ImageNet weights; the headline is the best on validation
        "paper": {
            "data": {"source": "dragon", "config": "Regular"},
            "recipes": [
                {"name": "spectrum", "patch_size": 16, "test_patches": 1024},
                {"name": "patches", "patch_size": 64, "width": 64, "test_patches": 16, "front": "bayar"},
                {"name": "resize224", "backbone": "resnet50", "pretrained": "imagenet"},
            ],
            "augment": {"flips": True},
            "train": {
                "steps": 20000,
                "batch_size": 256,
                "lr": 1e-3,
                "warmup_steps": 500,
                "eval_every": 1000,
                "patience": 5,
                "num_workers": 8,
            },
        },
    }

    @classmethod
    def preset_fields(cls, raw: dict) -> dict:
        """A preset's data fields apply only to the same source: `data: {source: dragon}` under the smoke
        preset (traces) takes none of its trace settings."""
        fields = super().preset_fields(raw)
        data, preset_data = raw.get("data"), fields.get("data") or {}
        if isinstance(data, dict) and data.get("source", "traces") != preset_data.get("source", "traces"):
            fields = {k: v for k, v in fields.items() if k != "data"}
        return fields

    @model_validator(mode="after")
    def _consistent(self):
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: a generator is listed twice")
        labels = [r.label for r in self.recipes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"recipes: two recipes are the same ({', '.join(labels)})")
        return self


# --- the run -------------------------------------------------------------------------------------


def run(ctx: RunContext, spec: Spec) -> None:
    import numpy as np

    from workbench.jobs.data.attribution import split_by_prompt

    ctx.phase("reading the images")
    data = load_data(ctx, spec)
    names = data.class_names
    y_train = labels_of(data.train, names, "training")
    y_test = labels_of(data.test, names, "test")
    train_idx, val_idx = split_by_prompt(list(data.train["prompt"]), spec.val_fraction, spec.seed)
    if len(val_idx) > spec.train.max_val_images:
        val_idx = np.sort(np.random.default_rng(spec.seed).choice(val_idx, spec.train.max_val_images, False))
    ctx.event(
        f"{data.name}: {len(names)} generators; {len(train_idx)} training, {len(val_idx)} validation "
        f"(held out by prompt), {len(y_test)} test images"
    )
    shortcut = check_files(ctx, data.train, y_train, names)
    split = (data.train.select(train_idx), y_train[train_idx], data.train.select(val_idx), y_train[val_idx])
    results = []
    several = len(spec.recipes) > 1
    if several:  # one bar for every recipe, each its share (ctx.part); each step is an event
        ctx.phase(f"training and testing {len(spec.recipes)} recipes")
    for i, recipe in enumerate(spec.recipes):
        view = recipe.view
        done = finished_recipe(ctx, recipe, len(names)) if several else None
        if done is not None:  # a resumed run: this recipe finished before the interruption
            net, fit, logits = done
            ctx.event(f"{recipe.label}: finished before, its model and test logits read back")
        else:
            step = ctx.part(recipe.label, i, len(spec.recipes)) if several else ctx
            step.phase(f"training {recipe.label}")
            net, fit = train_recipe(step, spec, recipe, view, *split, len(names))
            step.phase(f"testing {recipe.label}", 1)
            logits = predict(net, data.test, y_test, view, ctx.device, spec.train.num_workers)
            step.progress(1, 1)
            if several:
                keep_recipe(ctx, recipe, net, fit, logits)
        results.append({"recipe": recipe, "view": view, "net": net, "fit": fit, "logits": logits})
        ctx.event(f"{recipe.label}: test top-1 {float((logits.argmax(1) == y_test).mean()):.4f}")
    ctx.phase("scoring with intervals", 1)
    report(ctx, spec, results, y_test, names, shortcut)
    ctx.progress(1, 1)
    head = max(results, key=lambda r: (r["fit"]["val_top1"], -r["fit"]["val_loss"]))
    ctx.phase("learning what its training images look like", 1)
    familiarity(ctx, spec, head, *split, data.test, y_test)
    ctx.progress(1, 1)


FAMILIARITY_TRAIN_IMAGES = 2000  # training images whose features define "familiar" (a seeded sample)


def familiarity(ctx, spec: Spec, head: dict, train_rows, y_train, val_rows, y_val, test_rows, y_test) -> None:
    """The model's Familiarity (jobs.attributor): fitted on the features of up to 2000 training images,
    calibrated on the held-out validation images, written beside the model, and checked on the test
    images, which come from the same generators: about 1 % of them should be flagged, and
    the summary says how many were (`unfamiliar_test`, with its interval)."""
    import numpy as np
    from safetensors.torch import save

    from workbench.jobs.attributor import FAMILIARITY, UNFAMILIAR_SHARE, Familiarity, with_features
    from workbench.jobs.metrics.stats import share_ci

    net, view, workers = head["net"], head["view"], spec.train.num_workers
    pick = np.sort(
        np.random.default_rng(spec.seed).choice(
            len(y_train), min(len(y_train), FAMILIARITY_TRAIN_IMAGES), False
        )
    )

    def features(rows, labels):
        return predict(
            net, rows, labels, view, ctx.device, workers, lambda x: with_features(net)(x)[1]
        ).astype(np.float64)

    known = Familiarity.fit(
        features(train_rows.select(pick), y_train[pick]), y_train[pick], features(val_rows, y_val)
    )
    ctx.file(FAMILIARITY, save(known.tensors()))
    flagged = int((known.share_further(known.distance(features(test_rows, y_test))) < UNFAMILIAR_SHARE).sum())
    est = share_ci(flagged, len(y_test))
    expected = max(UNFAMILIAR_SHARE, 1 / (len(y_val) + 1))
    ctx.summary(**est.summary("unfamiliar_test"))
    ctx.event(
        f"familiarity: {len(pick)} training images, {len(y_val)} held-out; {flagged} of {len(y_test)} test "
        f"images flagged as unlike the training set ({est}; about {expected:.1%} expected: beyond 99 % of "
        f"the held-out images, or all of them when there are fewer than 100)"
    )


SHORTCUT_MARGIN = 0.05  # size/format naming this much more than the commonest class is a shortcut


def check_files(ctx: RunContext, rows, labels: np.ndarray, names: list[str]) -> float:
    """Warn when the training files' size, format and mode name the generator (the literature's JPEG
    and size bias): a classifier can then score without looking at a single trace. Returns the share
    those traits name (the summary's size_by_class)."""
    from workbench.jobs.data import attribution as A

    named, majority, per_class = A.size_by_class(A.file_traits(rows), labels, names)
    ctx.table("files", per_class)
    if named > majority + SHORTCUT_MARGIN:
        ctx.event(
            f"warning: the files' size, format and mode alone name the generator of {named:.0%} of the "
            f"training images (guessing the commonest class: {majority:.0%}); a classifier can learn "
            "the file instead of the traces. See the files table; data.normalise: {format: png, size: "
            "...} re-encodes every image the same way."
        )
    return named


def keep_recipe(ctx: RunContext, recipe: RecipeSpec, net, fit: dict, logits: np.ndarray) -> None:
    """A finished recipe's best weights, its fit and its test logits, so a run interrupted in a later
    recipe does not train this one again (the checkpoint holds one recipe at a time)."""
    import json

    import torch
    from safetensors.torch import save

    tensors = {f"weights.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors["logits"] = torch.from_numpy(logits)
    ctx.file(f"recipes/{recipe.label}.safetensors", save(tensors, metadata={"fit": json.dumps(fit)}))


def finished_recipe(ctx: RunContext, recipe: RecipeSpec, k: int):
    """(net, fit, test logits) of a recipe this run finished in an earlier attempt, or None."""
    import json

    from safetensors import safe_open

    path = ctx.own_file(f"recipes/{recipe.label}.safetensors")
    if path is None:
        return None
    with safe_open(str(path), "pt") as f:
        fit = json.loads(f.metadata()["fit"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    net = recipe.build(k).to(ctx.device)
    net.load_state_dict(
        {key[len("weights.") :]: v for key, v in tensors.items() if key.startswith("weights.")}
    )
    return net.eval(), fit, tensors["logits"].numpy()


def load_data(ctx: RunContext, spec: Spec):
    """The source's images as jobs.data.attribution.AttributionData (classes: the spec's, or all)."""
    from workbench.jobs.data import attribution as A

    d = spec.data
    cache = ctx.cache_dir("attribution")
    if isinstance(d, DragonSource | ShardsSource):
        per_class = {"train": d.train_per_class, "test": d.test_per_class}
        if isinstance(d, DragonSource):
            splits = A.load_webdataset(
                cache, repo=d.repo, config=d.config, per_class=per_class, classes=spec.classes
            )
            name = f"DRAGON {d.config}"
        else:
            splits = A.load_webdataset(
                cache, files={"train": d.train, "test": d.test}, per_class=per_class, classes=spec.classes
            )
            name = f"shards ({len(d.train)} train, {len(d.test)} test)"
    elif isinstance(d, FolderSource):
        splits, name = A.folder_rows(Path(d.path), d.test_fraction, spec.seed), Path(d.path).name
    elif isinstance(d, ZooSource):
        splits = zoo_rows(ctx, spec, d)
        name = f"zoo of {', '.join(str(m.key) for m in d.members)}"
    else:
        splits, name = trace_rows(spec, d), f"traces of {d.base}"
    found = sorted(set(splits["train"]["generator"]))
    if spec.classes:
        missing = [c for c in spec.classes if c not in found]
        if missing:
            raise ValueError(
                f"classes: no training image of {missing[0]!r} (the data has: {', '.join(found)})"
            )
        splits = {
            s: ds.filter(lambda g: g in spec.classes, input_columns="generator") for s, ds in splits.items()
        }
        names = list(spec.classes)
    elif isinstance(d, TracesSource):
        names = list(d.pipelines)
    elif isinstance(d, ZooSource):
        names = list(dict.fromkeys(splits["train"]["generator"]))
    else:
        names = found
    if len(names) < 2:
        raise ValueError(f"data: {len(names)} generator found; attribution needs at least 2")
    if d.normalise is not None:
        splits = {s: A.normalised(ds, d.normalise.size, d.normalise.format) for s, ds in splits.items()}
        name += f", re-encoded as {d.normalise.format}" + (
            f" at {d.normalise.size} px" if d.normalise.size else ""
        )
    return A.AttributionData(name, splits["train"], splits["test"], names)


def labels_of(rows, names: list[str], split: str) -> np.ndarray:
    import numpy as np

    index = {n: i for i, n in enumerate(names)}
    generators = list(rows["generator"])
    unknown = sorted({g for g in generators if g not in index})
    if unknown:
        raise ValueError(
            f"data: the {split} split has images of {', '.join(unknown[:3])}, which the training split lacks "
            "(list the generators to use in classes)"
        )
    return np.array([index[g] for g in generators], dtype=np.int64)


SPLIT_SEEDS = {"train": 0, "test": 1}  # the trace benchmark's splits draw from different seeds


def trace_rows(spec: Spec, d: TracesSource) -> dict:
    """The trace benchmark: disjoint base images per pipeline (seeded), so content never tells classes
    apart; test images come from the base dataset's test split."""
    import numpy as np

    from workbench.jobs.data import attribution as A
    from workbench.jobs.data.images import load_images

    base = load_images(d.base, d.path, seed=spec.seed)
    out = {}
    for split, x, y, per in (
        ("train", base.x_train, base.y_train, d.train_per_class),
        ("test", base.x_test, base.y_test, d.test_per_class),
    ):
        need = per * len(d.pipelines)
        if need > len(x):
            raise ValueError(
                f"data: {len(d.pipelines)} pipelines x {per} images need {need} {split} images of {d.base}; "
                f"it has {len(x)} (each pipeline gets its own images)"
            )
        order = np.random.default_rng([spec.seed, split == "test"]).permutation(len(x))[:need]
        grey = ((x[order, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
        images, generators, prompts = [], [], []
        for k, pipeline in enumerate(d.pipelines):
            chunk = order[k * per : (k + 1) * per]
            # content noise and tint drawn apart per split: no test image shares them with a training one
            seed = [spec.seed, SPLIT_SEEDS[split], k]
            images.append(A.trace_images(grey[k * per : (k + 1) * per], pipeline, d.factor, seed, d.strength))
            generators += [pipeline] * per
            prompts += [base.class_names[int(c)] for c in y[chunk]]
        out[split] = A.array_rows(np.concatenate(images), generators, prompts)
    return out


def zoo_rows(ctx: RunContext, spec: Spec, d: ZooSource) -> dict:
    """Images drawn from finished images runs, one class per member; the prompt is the class a draw
    was conditioned on. Draws are cached per (model, sampler, guidance, seed) like augmentation's."""
    import numpy as np

    from workbench.jobs.data import attribution as A
    from workbench.jobs.diffusion import image_model, synthetic

    loaded = {}  # by what each member is drawn from (run ids or {experiment, name}, published models)
    for m in d.members:
        if m.key not in loaded:
            loaded[m.key] = (
                image_model.finished_model(ctx, m.run, f"data.runs ({m.run})")
                if m.model is None
                else image_model.published_model(ctx, m.model, spec.seed, f"data.runs ({m.model.pretrained})")
            )
    published = {k: m.record for k, m in loaded.items() if m.record is not None}
    if published:
        ctx.summary(pretrained=published)
    members = [  # runs by id from here
        m if m.model is not None else m.model_copy(update={"run": loaded[m.key].run_id}) for m in d.members
    ]
    models = {m.key: loaded[raw.key] for m, raw in zip(members, d.members, strict=True)}
    names = zoo_names(members, {k: m.name for k, m in models.items()})
    for name in names:  # a published folder's name becomes a class name: shown, exported, published
        A.check_generator_name(name, "data.runs")
    for raw, m in zip(d.runs, members, strict=True):  # before any draw: a bad member costs no sampling
        model = models[m.key].model
        if isinstance(raw, ZooMember) and raw.guidance_scale and not model.num_classes:
            raise ValueError(
                f"data.runs: {'run' if raw.model is None else 'model'} {raw.key} is unconditional; guidance_scale {raw.guidance_scale:g} "
                "needs a class-conditional model (set it to 0)"
            )
        if model.num_classes:
            check_guidance(
                model.num_classes,
                model.null_class is not None,
                m.guidance_scale,
                f"data.runs ({m.key}): guidance_scale",
                "its model.class_null",
            )
    out = {"train": ([], [], []), "test": ([], [], [])}
    for member, name in zip(members, names, strict=True):
        m, sampler = models[member.key], member.sampler
        k = max(1, m.model.num_classes)
        classes = list(range(k))
        for split, per, offset in (("train", d.train_per_class, 0), ("test", d.test_per_class, 104729)):
            per_class = -(-per // k)  # draws per conditioning class, enough for `per` images
            key = synthetic.set_key(
                generator=image_model.weights_digest(m.model),
                classes=classes,
                sampler=sampler.model_dump(),
                guidance=member.guidance_scale,
                sampling_seed=spec.seed + offset,
            )
            syn = synthetic.load(ctx.cache_dir("synthetic"), key, per_class, k)
            if syn is None:
                x, seconds = synthetic.generate(
                    m.model,
                    m.schedule,
                    m.shape,
                    classes,
                    per_class,
                    sampler.name,
                    sampler.steps,
                    member.guidance_scale,
                    seed=spec.seed + offset,
                    batch_size=d.batch_size,
                    eta=sampler.eta,
                    device=ctx.device,
                )
                y = synthetic.cycling_labels(classes, per_class)
                synthetic.save(
                    ctx.cache_dir("synthetic"), key, x, y, {"run": ctx.run_id, "source_run": m.run_id}
                )
                syn = synthetic.SyntheticSet(x, y, False, seconds)
                ctx.event(f"zoo: drew {len(x)} {split} images for {name} in {seconds:.1f} s")
            x = synthetic.to_uint8(syn.x[:per])  # (n, C, H, W)
            x = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
            images, generators, prompts = out[split]
            images.append(x.transpose(0, 2, 3, 1))
            generators += [name] * len(x)
            cls = m.class_names or ["unconditional"]
            prompts += [cls[int(c)] for c in syn.y[:per]]
    shapes = {imgs[0].shape[1:] for imgs, _, _ in out.values()}
    if len(shapes) > 1:
        raise ValueError(f"data.runs: the runs make images of different sizes ({sorted(shapes)})")
    return {s: A.array_rows(np.concatenate(i), g, p) for s, (i, g, p) in out.items()}


def zoo_names(members: list[ZooMember], model_names: dict[int | str, str | None]) -> list[str]:
    """A class name per member: its own name, else its run's spec name (run<id> where two runs share
    one) or the published model's, with the sampler and guidance added where one model is drawn more
    than one way. model_names: by member key (run id, or the published model's place)."""

    def plain(key) -> str:
        return f"run{key}" if isinstance(key, int) else key

    base = {k: n or plain(k) for k, n in model_names.items()}
    if len(set(base.values())) != len(base):
        base = {k: plain(k) for k in base}
    uses = [m.key for m in members]
    names = [
        m.name
        or base[m.key]
        + (f" {m.sampler.name}-{m.sampler.steps} g{m.guidance_scale:g}" if uses.count(m.key) > 1 else "")
        for m in members
    ]
    if len(set(names)) != len(names):
        raise ValueError(f"data.runs: two members would share the class name {max(names, key=names.count)!r}")
    return names


def train_recipe(ctx, spec: Spec, recipe: RecipeSpec, view, train_rows, y_train, val_rows, y_val, k: int):
    """Train one recipe's classifier; returns it with the best validation weights, and how it went."""
    import torch
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from torch.nn import functional as F

    from workbench.jobs.context import RunCancelled
    from workbench.jobs.data.attribution import Augment, StepBatches, TrainViews
    from workbench.jobs.diffusion.train import autocast

    if recipe.name == "spectrum":
        return fit_spectrum(ctx, spec, recipe, view, train_rows, y_train, val_rows, y_val, k)
    t = spec.train
    steps = recipe.steps or t.steps
    device = torch.device(ctx.device)
    on_gpu = device.type == "cuda"
    torch.manual_seed(spec.seed)
    net = recipe.build(k).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=on_gpu or None)
    schedule = get_cosine_schedule_with_warmup(opt, min(t.warmup_steps, steps // 2), steps)
    start, history, best = resume(ctx, net, opt, schedule)  # best: (val top-1, -val loss, step, CPU weights)
    # a run that had stopped early before it was interrupted trains no further
    stopped = best is not None and t.patience and _since_best(history, best[2]) >= t.patience
    end = start if stopped else steps
    aug = Augment(**spec.augment.model_dump())
    batch = min(t.batch_size, len(y_train))
    loader = torch.utils.data.DataLoader(
        TrainViews(train_rows, y_train, view, aug),
        batch_sampler=StepBatches(len(y_train), batch, spec.seed, start, end),
        num_workers=t.num_workers,
        pin_memory=on_gpu,
    )

    def save(step: int) -> None:
        ctx.checkpoint(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_schedule": schedule.state_dict(),
                "step": step,
                "history": history,
                "best": None
                if best is None
                else {"top1": best[0], "neg_loss": best[1], "step": best[2], "weights": best[3]},
            },
            step,
        )

    pending: list[torch.Tensor] = []
    net.train()
    step = start
    for step, (x, y) in enumerate(loader, start + 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if on_gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, t.mixed_precision):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        pending.append(loss.detach())
        stop = ctx.should_stop()
        last = step == steps
        if stop or last or step % t.log_every == 0:
            values = torch.stack(pending).float().cpu()
            pending.clear()
            if not torch.isfinite(values).all():
                raise RuntimeError(f"the training loss is not finite by step {step}: lower train.lr")
            ctx.log(step, loss=float(values.mean()), lr=schedule.get_last_lr()[0])
            ctx.progress(step, steps)
        if last or step % t.eval_every == 0:
            top1, val_loss = validate(net, val_rows, y_val, view, device, t.num_workers)
            ctx.log(step, val_top1=top1, val_loss=val_loss)
            history.append({"step": step, "val_top1": top1, "val_loss": val_loss})
            if best is None or (top1, -val_loss) > best[:2]:
                best = (
                    top1,
                    -val_loss,
                    step,
                    {k_: v.detach().cpu().clone() for k_, v in net.state_dict().items()},
                )
            save(step)
            if t.patience and _since_best(history, best[2]) >= t.patience:
                ctx.event(
                    f"early stop at step {step}: validation top-1 has not improved for {t.patience} "
                    f"validations (best {best[0]:.4f} at step {best[2]})"
                )
                break
        elif stop:
            save(step)
        if stop:
            raise RunCancelled
    if best is None:  # no validation yet (steps == start): validate the weights we have
        raise RuntimeError("training ended before any validation")
    net.load_state_dict(best[3])
    ctx.progress(steps, steps)
    return net.eval(), {
        "steps": step,
        "best_step": best[2],
        "val_top1": best[0],
        "val_loss": -best[1],
        "stopped_early": step < steps,
    }


def resume(ctx, net, opt, schedule) -> tuple[int, list, tuple | None]:
    """(step, validation history, best so far) of this run's last checkpoint, its weights, optimizer and
    schedule loaded; (0, [], None) when there is none."""
    if (state := ctx.restore()) is None:
        return 0, [], None
    from workbench.jobs.diffusion.train import restore_optimizer

    net.load_state_dict(state["model"])
    restore_optimizer(opt, state["optimizer"])
    schedule.load_state_dict(state["lr_schedule"])
    b = state.get("best")
    best = None if b is None else (float(b["top1"]), float(b["neg_loss"]), int(b["step"]), b["weights"])
    return int(state["step"]), list(state["history"]), best


def validate(net, val_rows, y_val, view, device, workers: int) -> tuple[float, float]:
    """(top-1, cross-entropy) on the validation rows; the net is left in training mode."""
    import torch
    from torch.nn import functional as F

    val = predict(net, val_rows, y_val, view, device, workers)
    top1 = float((val.argmax(1) == y_val).mean())
    val_loss = float(F.cross_entropy(torch.from_numpy(val), torch.from_numpy(y_val)))
    net.train()
    return top1, val_loss


SPECTRUM_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # inverse L2 strengths tried, chosen on validation


def fit_spectrum(ctx, spec: Spec, recipe: RecipeSpec, view, train_rows, y_train, val_rows, y_val, k: int):
    """The spectral baseline: each image's mean log-DCT spectrum over its grid of crops, a standardised
    L2 logistic regression (scikit-learn) whose strength is chosen on validation, folded into the
    model's linear layer. Seconds, no steps: it is logged as one step per strength tried."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    net = recipe.build(k).to(ctx.device).eval()

    def spectra(rows, labels) -> np.ndarray:  # each image's mean spectrum over its grid of crops
        return predict(net, rows, labels, view, ctx.device, spec.train.num_workers, net.features)

    x_train, x_val = spectra(train_rows, y_train), spectra(val_rows, y_val)
    scaler = StandardScaler().fit(x_train)
    z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
    best = None
    for step, c in enumerate(SPECTRUM_C, 1):
        clf = LogisticRegression(C=c, max_iter=5000, random_state=spec.seed).fit(z_train, y_train)
        proba = clf.predict_proba(z_val)
        top1 = float((proba.argmax(1) == y_val).mean())
        loss = float(log_loss(y_val, proba, labels=range(k)))
        ctx.log(step, val_top1=top1, val_loss=loss)
        ctx.progress(step, len(SPECTRUM_C))
        if best is None or (top1, -loss) > best[:2]:
            best = (top1, -loss, step, clf, c)
    top1, neg_loss, step, clf, c = best
    coef, intercept = clf.coef_, clf.intercept_
    if k == 2:  # scikit-learn keeps one row for two classes: the logit of class 1 over class 0
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = coef / scaler.scale_  # (K, D): the standardisation folded in
    bias = intercept - weight @ scaler.mean_
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(weight).float())
        net.head.bias.copy_(torch.from_numpy(bias).float())
    ctx.event(f"L2 strength C = {c} chosen on validation (top-1 {top1:.4f})")
    return net, {
        "steps": len(SPECTRUM_C),
        "best_step": step,
        "val_top1": top1,
        "val_loss": -neg_loss,
        "stopped_early": False,
        "C": c,
    }


def _since_best(history: list[dict], best_step: int) -> int:
    return sum(1 for h in history if h["step"] > best_step)


def predict(
    net, rows, labels, view, device, workers: int = 0, forward=None, images_per_batch: int = 32
) -> np.ndarray:
    """The mean logits of each image's test views, float32 (N, K); `forward` in place of the net's own
    (the spectrum recipe's features)."""
    import numpy as np
    import torch

    from workbench.jobs.data.attribution import TestViews, collate_views
    from workbench.jobs.diffusion.train import autocast

    net.eval()
    loader = torch.utils.data.DataLoader(
        TestViews(rows, labels, view),
        batch_size=images_per_batch,
        num_workers=workers,
        collate_fn=collate_views,
    )
    out = []
    with torch.no_grad():
        for views, counts, _ in loader:
            views = views.to(device)
            with autocast(device):
                logits = torch.cat([(forward or net)(chunk).float() for chunk in views.split(512)])
            out += [part.mean(0) for part in logits.split(counts.tolist())]
    return torch.stack(out).cpu().numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


# --- results -------------------------------------------------------------------------------------


def scores(logits: np.ndarray, y: np.ndarray, k: int) -> dict:
    """top-1, top-5 (Wilson intervals) and macro-F1 (bootstrap over test images) of one recipe."""
    import numpy as np
    from sklearn.metrics import f1_score

    from workbench.jobs.metrics.stats import share_ci

    pred = logits.argmax(1)
    top = np.argsort(-logits, axis=1)[:, : min(5, k)]
    correct = pred == y
    in_top5 = (top == y[:, None]).any(1)
    rng = np.random.default_rng(0)  # a percentile bootstrap over test images (400 resamples)
    draws = [
        f1_score(y[i], pred[i], labels=range(k), average="macro", zero_division=0)
        for i in (rng.integers(0, len(y), len(y)) for _ in range(400))
    ]
    f1 = float(f1_score(y, pred, labels=range(k), average="macro", zero_division=0))
    low, high = np.quantile(draws, [0.025, 0.975])
    return {
        "top1": share_ci(int(correct.sum()), len(y)),
        "top5": share_ci(int(in_top5.sum()), len(y)),
        "macro_f1": (f1, float(low), float(high)),
        "correct": correct,
        "pred": pred,
    }


def report(
    ctx: RunContext, spec: Spec, results: list[dict], y: np.ndarray, names: list[str], shortcut: float
) -> None:
    from safetensors.torch import save

    from workbench.jobs.metrics.stats import paired_ci

    k = len(names)
    for r in results:
        r["scores"] = scores(r["logits"], y, k)
    # the headline recipe is chosen on validation (top-1, then loss), not on the test split
    head = max(results, key=lambda r: (r["fit"]["val_top1"], -r["fit"]["val_loss"]))
    s = head["scores"]
    per_class = per_class_rows(s["pred"], y, names)
    ctx.table("per_class", per_class)
    ctx.table("confusion", confusion_rows(s["pred"], y, names))
    if len(results) > 1:
        first = results[0]["scores"]["correct"].astype(float)
        rows = []
        for r in results:
            sc, fit = r["scores"], r["fit"]
            d = paired_ci(sc["correct"].astype(float), first).columns("top1_vs_first")
            if r is results[0]:  # a recipe minus itself is not an estimate
                d = dict.fromkeys(d)
            rows.append(
                {
                    "recipe": r["recipe"].label,
                    **sc["top1"].columns("top1"),
                    "top5": sc["top5"].value,
                    "macro_f1": sc["macro_f1"][0],
                    "macro_f1_ci_low": sc["macro_f1"][1],
                    "macro_f1_ci_high": sc["macro_f1"][2],
                    "macro_f1_n": len(y),
                    "val_top1": fit["val_top1"],
                    "val_loss": fit["val_loss"],
                    "best_step": fit["best_step"],
                    "steps": fit["steps"],
                    **d,
                    "headline": r is head,
                }
            )
        ctx.table("recipes", rows)
        for r in results:
            if r is not head:
                ctx.table(f"confusion_{r['recipe'].label}", confusion_rows(r["scores"]["pred"], y, names))
    for r in results:
        suffix = "" if r is head else f"_{r['recipe'].label}"
        ctx.image(
            f"confusion{suffix}", None, confusion_figure(r["scores"]["pred"], y, names, r["recipe"].label)
        )
    config = model_config(head["recipe"], head["view"], names, spec, s)
    ctx.file("model.safetensors", save({k_: v.contiguous() for k_, v in head["net"].state_dict().items()}))
    ctx.file("config.json", __import__("json").dumps(config, indent=2).encode())
    ctx.summary(
        recipe=head["recipe"].label,
        **s["top1"].summary("top1"),
        **s["top5"].summary("top5"),
        macro_f1=s["macro_f1"][0],
        macro_f1_ci=[s["macro_f1"][1], s["macro_f1"][2]],
        macro_f1_n=len(y),
        n_classes=k,
        n_test=len(y),
        val_top1=head["fit"]["val_top1"],
        best_step=head["fit"]["best_step"],
        steps_trained=head["fit"]["steps"],
        stopped_early=head["fit"]["stopped_early"],
        worst_class=min(per_class, key=lambda row: row["accuracy"] if row["support"] else 2.0)["class"],
        size_by_class=shortcut,
    )


def model_config(recipe: RecipeSpec, view, names: list[str], spec: Spec, s: dict) -> dict:
    """What `workbench attribute` and a published folder need to rebuild and use the model."""
    return {
        "format": "workbench-attribution/1",
        "backbone": recipe.backbone,
        "width": recipe.width,
        "front": recipe.front,
        "recipe": view.recipe,
        "size": view.size,
        "test_patches": view.test_patches,
        "class_names": names,
        "normalisation": "imagenet",
        "data": spec.data.model_dump(mode="json"),
        "results": {
            "top1": s["top1"].value,
            "top1_ci": [s["top1"].low, s["top1"].high],
            "top5": s["top5"].value,
            "top5_ci": [s["top5"].low, s["top5"].high],
            "macro_f1": s["macro_f1"][0],
            "macro_f1_ci": [s["macro_f1"][1], s["macro_f1"][2]],
            "n_test": int(s["top1"].n),
        },
    }


def per_class_rows(pred: np.ndarray, y: np.ndarray, names: list[str]) -> list[dict]:
    from workbench.jobs.metrics.stats import share_ci

    rows = []
    for c, name in enumerate(names):
        mine = y == c
        support = int(mine.sum())
        hits = int((pred[mine] == c).sum())
        est = (
            share_ci(hits, support).columns("accuracy")
            if support
            else dict.fromkeys(("accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_n"))
        )
        rows.append(
            {
                "class": name,
                **est,
                "support": support,
                "predicted": int((pred == c).sum()),
            }
        )
    return rows


def confusion_rows(pred: np.ndarray, y: np.ndarray, names: list[str]) -> list[dict]:
    """One row per true class (the `classes` column), a column of counts per predicted class."""
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(y, pred, labels=range(len(names)))
    return [
        {"classes": name, **{p: int(m[i, j]) for j, p in enumerate(names)}} for i, name in enumerate(names)
    ]


def confusion_figure(pred: np.ndarray, y: np.ndarray, names: list[str], title: str):
    import numpy as np
    from sklearn.metrics import confusion_matrix

    from workbench.jobs.figures import pyplot

    plt = pyplot()
    m = confusion_matrix(y, pred, labels=range(len(names))).astype(float)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = max(4.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true generator")
    ax.set_title(f"{title}: share of each true class")
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        int(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    plt.close(fig)
    return fig
