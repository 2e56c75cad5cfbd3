"""augmentation: does adding diffusion samples to a classifier's training set help, and by how much?

Method, per real count n (images per class) and seed s:
1. Real subset: n training images of each class (of the chosen `classes`), drawn by (seed, n, s); `all`
   takes the whole training split. The full real test split of those classes is only ever evaluated on.
2. Generator: a class-conditional DDPM trained (jobs.diffusion.image_model, the images recipe) on exactly
   that subset, nothing else, seeded by s; or one finished images run (`diffusion.model_run`) or published
   model (`diffusion.model: {pretrained: ...}`), refused unless it was trained only on images of every
   subset or the spec allows outside data (a published model always needs it). An unconditional one is
   drawn in rounds and each draw labelled by a classifier (`label_with`: the seed's real-only one, or the
   reference: an oracle) until every class has its count.
3. Synthetic set: round(ratio x n) images per class for the largest ratio, class-balanced, from the
   chosen sampler and guidance scale; smaller ratios take its prefix (so ratios compare on nested sets).
   Cached under the store per (generator, sampler, guidance, seed) (jobs.diffusion.synthetic): a resumed
   or repeated run that needs that many images or fewer neither trains the generator nor samples again.
4. Classifiers: the same architecture, seed and number of optimizer steps (not epochs: equal compute)
   trained on real only, on real + synthetic, on synthetic only, and, with `filter`, on real + the
   synthetic images a judge classifies as their label with at least the given confidence (balanced by
   truncation). Each scored on the whole test split: risk (mean cross-entropy) and accuracy; train risk
   on its own training set.
Memorization: how near the synthetic images lie to the real subset (nearest-neighbour pixel distance)
against how near fresh real images (the test split) lie to it; near copies add little a classifier did
not already have. Over the seeds: accuracy mean with its t-interval, and the gain over real only at the same n as the
paired difference (same real subset, generator and classifier seed) with its t-interval. The headline
picks the best ratio at the smallest n on the test split among the ratios tried: its interval is that
setting's, not the choice's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator

from workbench.jobs.data.names import CLASS_NAMES
from workbench.jobs.diffusion import image_model
from workbench.jobs.diffusion.config import SamplerSpec, Strict, TrainSpec, check_guidance
from workbench.jobs.diffusion.image_model import DataSpec, ImageModelSpec, UNetSpec
from workbench.jobs.diffusion.pretrained import PretrainedModel, check_data
from workbench.jobs.spec import BaseSpec, RunRef

# imported by run(); the worker loads them once, up front
PRELOAD = (
    *image_model.PRELOAD,
    "workbench.jobs.classify",
    "workbench.jobs.diffusion.synthetic",
    "workbench.jobs.metrics.probes",
    "workbench.jobs.metrics.stats",
    "scipy.stats",
    "matplotlib.pyplot",
)
HEADLINE = ("gain", "augmented_accuracy", "real_accuracy")  # at the smallest real count, best ratio

if TYPE_CHECKING:
    import torch

    from workbench.jobs.context import RunContext
    from workbench.jobs.data.images import ImageData

REAL, MIXED, SYNTHETIC, FILTERED = "real", "real+synthetic", "synthetic", "real+synthetic (filtered)"


class GeneratorSpec(Strict):
    model_run: RunRef | None = Field(
        None,
        description="sample from this succeeded class-conditional images run (its id, or {experiment, name}) "
        "instead of training one",
    )
    allow_outside_data: bool = Field(
        False,
        description="use a model_run trained on images outside each real subset, or a published model "
        "(its samples then carry information the real-only classifier never saw)",
    )
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = Field(1000, ge=2, le=10_000)
    model: UNetSpec | PretrainedModel = Field(
        UNetSpec(),
        description="the UNet to train per subset, or a published class-conditional one to sample: "
        "{pretrained: OWNER/NAME or a folder, class_null: true}",
    )
    train: TrainSpec = TrainSpec()
    sampler: SamplerSpec = SamplerSpec(name="ddim", steps=50)
    guidance_scale: float = Field(2.0, ge=0, le=100, description="classifier-free guidance w of the samples")
    batch_size: int = Field(500, ge=1, le=100_000, description="images per sampling batch")
    label_with: Literal["real", "reference"] | None = Field(
        None,
        description="an unconditional model_run or published model: each draw gets the class a classifier "
        "gives it, real (the seed's real-only classifier: no label beyond the subset) or reference "
        "(trained on the whole training split: an oracle)",
    )

    @property
    def published(self) -> PretrainedModel | None:
        return self.model if isinstance(self.model, PretrainedModel) else None


class ClassifierSpec(Strict):
    arch: Literal["cnn", "resnet18"] = Field("cnn", description="cnn: the small CNN; resnet18: torchvision's")
    steps: int = Field(1000, ge=1, le=10_000_000, description="optimizer steps, the same for every setting")
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(2e-3, gt=0, le=1.0)
    weight_decay: float = Field(5e-4, ge=0, le=1.0)
    shifts: bool = Field(True, description="random shifts of up to 1/8 of the side")
    flips: bool = Field(False, description="random horizontal flips (natural images)")


class FilterSpec(Strict):
    min_confidence: float = Field(
        gt=0, lt=1, description="keep synthetic images judged their label this surely"
    )
    judge: Literal["real", "reference"] = Field(
        "real",
        description="real: the same seed's real-only classifier (no data beyond the subset); reference: "
        "the reference classifier, trained on the whole training split (an oracle, not a low-data setting)",
    )


class Spec(BaseSpec):
    kind: Literal["augmentation"] = "augmentation"
    data: DataSpec = DataSpec()
    classes: list[int | str] | None = Field(
        None, min_length=2, description="a subset of classes, by name or label (default: all)"
    )
    real_per_class: list[int | Literal["all"]] = Field(
        [10, 50], min_length=1, max_length=16, description="real training images per class; all: the split"
    )
    ratios: list[float] = Field(
        [1, 3, 10],
        min_length=1,
        max_length=16,
        description="synthetic images per real image (0 = real only, which is always trained)",
    )
    dataset_types: list[Literal["real+synthetic", "synthetic"]] = Field(
        ["real+synthetic", "synthetic"], min_length=1, description="what to train besides real only"
    )
    seeds: int = Field(
        5, ge=2, le=100, description="real subsets x generators x classifier seeds behind each interval"
    )
    diffusion: GeneratorSpec = GeneratorSpec()
    classifier: ClassifierSpec = ClassifierSpec()
    filter: FilterSpec | None = Field(None, description="also train on confidence-filtered synthetic images")

    PRESETS = {
        # digits at 8x8, 5 real images per class, 3 seeds: three tiny generators and 15 classifiers,
        # under a minute on 2 CPU cores.
        "smoke": {
            "real_per_class": [5],
            "ratios": [1, 4],
            "seeds": 3,
            "diffusion": {
                "timesteps": 200,
                "model": {"channels": [16, 32], "attention": [False, False]},
                "train": {
                    "steps": 120,
                    "batch_size": 50,
                    "lr": 3e-3,
                    "warmup_steps": 10,
                    "ema_decay": 0.9,
                    "checkpoint_every": 120,
                    "log_every": 10,
                },
                "sampler": {"name": "ddim", "steps": 20},
            },
            "classifier": {"steps": 150, "batch_size": 32},
        },
        # MNIST in the low-data regime on one GPU: a generator per real subset (4 counts x 5 seeds).
        "paper": {
            "data": {"name": "mnist"},
            "real_per_class": [10, 20, 50, 100],
            "ratios": [1, 3, 10],
            "seeds": 5,
            "diffusion": {
                "model": {
                    "channels": [64, 128, 128],
                    "attention": [False, True, True],
                    "layers_per_block": 2,
                    "dropout": 0.1,
                    "norm_groups": 32,
                    "attention_head_dim": 32,
                },
                "train": {
                    "steps": 6000,
                    "batch_size": 128,
                    "lr": 2e-4,
                    "warmup_steps": 200,
                    "ema_decay": 0.999,
                    "checkpoint_every": 2000,
                    "log_every": 50,
                },
                "sampler": {"name": "ddim", "steps": 50},
                "guidance_scale": 2.0,
                "batch_size": 2000,
            },
            "classifier": {"steps": 2000, "batch_size": 64},
        },
    }

    @classmethod
    def preset_fields(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A document whose generator is a published model takes none of the preset's UNet and training."""
        fields = super().preset_fields(raw)
        g = raw.get("diffusion")
        if isinstance(g, dict) and isinstance(g.get("model"), dict) and "pretrained" in g["model"]:
            kept = {k: v for k, v in fields.get("diffusion", {}).items() if k not in ("model", "train")}
            fields = {**fields, "diffusion": kept}
        return fields

    @model_validator(mode="after")
    def _consistent(self):
        if self.ratios != sorted(set(self.ratios)) or self.ratios[0] < 0:
            raise ValueError("ratios must be distinct, increasing and at least 0, e.g. [1, 3, 10]")
        if self.ratios[-1] <= 0:
            raise ValueError("ratios: give at least one above 0 (real only is always trained)")
        numbers = [n for n in self.real_per_class if n != "all"]
        if (
            numbers != sorted(set(numbers))
            or (numbers and numbers[0] < 1)
            or self.real_per_class.count("all") > 1
        ):
            raise ValueError(
                "real_per_class must be distinct increasing counts of at least 1, optionally ending in all"
            )
        if "all" in self.real_per_class and self.real_per_class[-1] != "all":
            raise ValueError("real_per_class: put all last")
        if len(set(map(str, self.classes or []))) != len(self.classes or []):
            raise ValueError("classes are listed twice")
        if self.classes is not None and self.data.name in CLASS_NAMES:
            class_indices(self.classes, CLASS_NAMES[self.data.name], self.data.name)
        published = self.diffusion.published
        if published is not None:
            if self.diffusion.model_run is not None:
                raise ValueError(
                    "diffusion: give model_run or a published model (model: {pretrained: ...}), not both"
                )
            if not self.diffusion.allow_outside_data:
                raise ValueError(outside_data(published.pretrained))
            if (found := published.found()) is not None:  # a folder here, or in the Hub cache
                check_data(found, self.data, "data")
                if found.classes(published):
                    check_guidance(
                        found.classes(published),
                        published.class_null,
                        self.diffusion.guidance_scale,
                        "diffusion.guidance_scale",
                        "diffusion.model.class_null",
                    )
                else:
                    check_labelling(
                        self.diffusion.label_with, self.diffusion.guidance_scale, "diffusion.model"
                    )
        elif self.diffusion.model_run is None:
            if self.diffusion.label_with is not None:
                raise ValueError(
                    "diffusion.label_with: only for an unconditional model_run or published model (a "
                    "generator trained here is class-conditional)"
                )
            if not self.diffusion.model.conditional:
                raise ValueError(
                    "diffusion.model.conditional: the generator must be class-conditional (it draws images of each class)"
                )
            try:
                self.generator_spec(self.seed)  # the images recipe's own checks (levels vs image size)
            except ValidationError as e:
                raise ValueError(f"diffusion: {e.errors()[0]['msg']}") from None
        return self

    def generator_spec(self, seed: int) -> ImageModelSpec:
        """The images spec a generator is trained with (on one real subset; the data is set by the run)."""
        g = self.diffusion
        return ImageModelSpec.model_validate(
            {
                "kind": "images",
                "data": self.data.model_dump(),
                "schedule": g.schedule,
                "timesteps": g.timesteps,
                "model": g.model.model_dump(),
                "train": g.train.model_dump(),
                "sample": {"sampler": g.sampler.model_dump(), "guidance_scales": [g.guidance_scale]},
                "seed": seed,
            }
        )


def class_indices(classes: list[int | str], names: list[str], dataset: str) -> list[int]:
    """The labels `classes` names (by label or by class name) in a dataset with these class names."""
    out = []
    for c in classes:
        if isinstance(c, int) and 0 <= c < len(names):
            out.append(c)
        elif isinstance(c, str) and c in names:
            out.append(names.index(c))
        else:
            raise ValueError(
                f"classes: {c!r} is not a class of {dataset} (labels 0-{len(names) - 1}, or names: {', '.join(names)})"
            )
    return out


def restrict(data: ImageData, labels: list[int]) -> ImageData:
    """Only the images of these classes, relabelled 0..K-1 in the order given."""
    import torch

    from workbench.jobs.data.images import ImageData

    lut = torch.full((data.num_classes,), -1, dtype=torch.long)
    lut[labels] = torch.arange(len(labels))

    def part(x, y):
        keep = lut[y] >= 0
        return x[keep], lut[y[keep]]

    (x_tr, y_tr), (x_te, y_te) = part(data.x_train, data.y_train), part(data.x_test, data.y_test)
    return ImageData(data.name, x_tr, y_tr, x_te, y_te, [data.class_names[i] for i in labels])


@dataclass(frozen=True)
class Plan:
    """One real training subset: its `real_per_class` label, images per class, seed index, indices."""

    label: int | str
    per_class: float
    seed: int
    idx: Any  # a numpy array of training-split indices


def run(ctx: RunContext, spec: Spec) -> None:
    """The paper's steps, per real subset: a synthetic set (from the cache, or a generator trained on the
    subset alone, or the spec's fixed model), then one classifier per training set (real, real plus
    synthetic, synthetic alone, filtered) with the same seed and steps; then gains with paired intervals."""
    from workbench.jobs.classify import ClassifierConfig

    data = image_model.load_images_of(spec.data, spec.seed)
    labels = (
        class_indices(spec.classes, data.class_names, data.name)
        if spec.classes
        else list(range(data.num_classes))
    )
    task = restrict(data, labels)
    ctx.event(
        f"{task.name}: {task.num_classes} classes ({', '.join(task.class_names)}), {len(task.y_train)} "
        f"training images to draw real subsets from, {len(task.y_test)} test images"
    )
    fixed = (
        FixedGenerator(ctx, spec, data, labels)
        if spec.diffusion.model_run is not None or spec.diffusion.published is not None
        else None
    )
    plans = plan_subsets(spec, task)
    if fixed is not None:
        fixed.check_subsets(task, plans, spec.diffusion.allow_outside_data)
    ratios = [r for r in spec.ratios if r > 0]
    types = [t for t in (MIXED, SYNTHETIC) if t in spec.dataset_types] + ([FILTERED] if spec.filter else [])
    fits_per_plan = 1 + len(ratios) * len(types)
    units = len(plans) * (fits_per_plan + 1)
    cfg = ClassifierConfig(**spec.classifier.model_dump())
    judge = reference_judge(ctx, spec, data) if spec.filter and spec.filter.judge == "reference" else None
    judge_all = None  # the reference classifier labelling an unconditional model's draws (label_with)
    if fixed is not None and fixed.labels_draws and spec.diffusion.label_with == "reference":
        judge_all = Labeller(judge or reference_judge(ctx, spec, data), labels)
    per_seed: list[dict] = []
    copies: list[dict] = []  # how near the synthetic images lie to the real ones they were made from
    counts = {"diffusion_models_trained": 0, "synthetic_sets_sampled": 0, "synthetic_sets_cached": 0}
    ctx.phase("generators and classifiers, subset by subset", units * 1000)
    for p, plan in enumerate(plans):
        unit = p * (fits_per_plan + 1)
        real_x, real_y = task.x_train[plan.idx], task.y_train[plan.idx]
        per_class = {r: max(1, round(r * plan.per_class)) for r in ratios}
        real = None  # the real-only classifier, trained first when it labels the draws
        if fixed is not None and fixed.labels_draws and spec.diffusion.label_with == "real":
            real = score(ctx, task, cfg, spec.seed + plan.seed, real_x, real_y)
        labeller = (
            None if fixed is None or not fixed.labels_draws else (Labeller(real[0]) if real else judge_all)
        )
        syn, made = synthetic_set(
            ctx,
            spec,
            task,
            fixed,
            plan,
            max(per_class.values()),
            ctx.part(f"gen/n{plan.label}-s{plan.seed}", unit, units),
            labeller,
        )
        for counter in made:
            counts[counter] += 1
        if plan.seed == 0:
            show_sets(ctx, plan.label, real_x, real_y, syn, task.num_classes)
        copies.append(
            {"real_per_class": plan.label, "seed": plan.seed, **nearness(syn.x, real_x, task.x_test)}
        )
        per_seed += fit_classifiers(
            ctx, spec, task, cfg, plan, syn, per_class, types, judge, labels, (unit + 1, units), real
        )
        ctx.table("augmentation_seeds", per_seed)  # as it grows: the TUI shows every finished seed
        done = [r for r in per_seed if r["real_per_class"] == plan.label and r["seed"] == plan.seed]
        shown = ", ".join(
            f"{r['dataset_type']} x{r['synthetic_ratio']:g} {r['test_accuracy']:.3f}" for r in done
        )
        ctx.event(f"n={plan.label} seed {plan.seed}: {shown}")

    rows = aggregate(per_seed, spec.real_per_class)
    ctx.table("augmentation", rows)
    ctx.table("memorization", copies)
    ctx.table("augmentation_seeds", per_seed)  # written again, last: the TUI lists tables oldest first
    ctx.summary(
        **counts,
        classifier_fits=len(per_seed),
        **headline(rows, per_seed, spec.real_per_class),
        **copying_summary(copies, spec.real_per_class[0]),
    )
    ctx.image("accuracy_vs_real", None, accuracy_figure(rows, spec, task.num_classes))


def plan_subsets(spec: Spec, task) -> list[Plan]:
    """The real subsets, `seeds` per `real_per_class` (`all`: the whole split, the seeds varying the rest)."""
    from workbench.jobs.metrics.probes import kshot_subsets

    y_train, k = task.y_train.numpy(), task.num_classes
    plans = []
    for label in spec.real_per_class:
        if label == "all":
            subsets = kshot_subsets(y_train, None, 1) * spec.seeds  # one subset: seeds vary the rest
        else:
            try:
                subsets = kshot_subsets(y_train, label, spec.seeds, spec.seed)
            except ValueError as e:  # more images per class than the split holds
                raise ValueError(f"real_per_class {label}: {e}") from None
        plans += [Plan(label, len(idx) / k, s, idx) for s, idx in enumerate(subsets)]
    return plans


def synthetic_set(ctx: RunContext, spec: Spec, task, fixed, plan: Plan, per_class: int, part, labeller=None):
    """(the plan's synthetic set of `per_class` images a class, the counters it adds to): from the cache,
    or sampled from the fixed model (an unconditional one's draws labelled by `labeller`), or from a
    generator trained (in `part`) on this subset only."""
    from workbench.jobs.diffusion import synthetic

    g, k = spec.diffusion, task.num_classes
    real_x, real_y = task.x_train[plan.idx], task.y_train[plan.idx]
    seed_s = spec.seed + plan.seed
    sampling_seed = seed_s + 7919  # apart from the training seeds
    generator_key = fixed.key if fixed else subset_generator_key(spec, real_x, real_y, task, seed_s)
    if labeller is not None:  # the labels are the labeller's: it is part of what the set is
        generator_key += f"|labelled by {g.label_with}"
        if g.label_with == "real":
            generator_key += (
                "|" + subset_generator_key(spec, real_x, real_y, task, seed_s) + repr(spec.classifier)
            )
    key = synthetic.set_key(
        generator=generator_key,
        classes=fixed.model_labels if fixed else list(range(k)),
        sampler=g.sampler.model_dump(),
        guidance=g.guidance_scale,
        sampling_seed=sampling_seed,
    )
    syn = synthetic.load(ctx.cache_dir("synthetic"), key, per_class, k)
    if syn is not None:
        return syn, ["synthetic_sets_cached"]
    if labeller is not None:
        x, y, seconds, drawn = labelled_draws(ctx, fixed, g, labeller, k, per_class, sampling_seed)
        synthetic.save(ctx.cache_dir("synthetic"), key, x, y, {"run": ctx.run_id, "generator": generator_key})
        ctx.event(
            f"gen/n{plan.label}-s{plan.seed}: drew {drawn} images in {seconds:.1f} s, labelled by the "
            f"{g.label_with} classifier; kept {per_class} of each class"
        )
        return synthetic.SyntheticSet(x, y, False, seconds), ["synthetic_sets_sampled"]
    if fixed:
        model, schedule, model_labels = fixed.model, fixed.schedule, fixed.model_labels
    else:
        subset = restrict_to(task, real_x, real_y)
        model, schedule = image_model.train_model(part, spec.generator_spec(seed_s), subset, keep=False)
        model_labels = list(range(k))
    x, seconds = synthetic.generate(
        model,
        schedule,
        task.shape,
        model_labels,
        per_class,
        g.sampler.name,
        g.sampler.steps,
        g.guidance_scale,
        seed=sampling_seed,
        batch_size=g.batch_size,
        eta=g.sampler.eta,
        device=ctx.device,
    )
    y = synthetic.cycling_labels(list(range(k)), per_class)  # in the task's labels
    synthetic.save(
        ctx.cache_dir("synthetic"),
        key,
        x,
        y,
        {"run": ctx.run_id, "generator": generator_key, "real_per_class": plan.label, "seed": plan.seed},
    )
    ctx.event(f"gen/n{plan.label}-s{plan.seed}: sampled {len(x)} images in {seconds:.1f} s")
    made = ["synthetic_sets_sampled"] + ([] if fixed else ["diffusion_models_trained"])
    return synthetic.SyntheticSet(x, y, False, seconds), made


def fit_classifiers(
    ctx, spec, task, cfg, plan, syn, per_class, types, judge, labels, progress, real=None
) -> list[dict]:
    """One classifier per training set of this plan, each with the plan's seed and the same steps: the
    real subset (`real`: already trained), then per ratio and type the synthetic images alone, with the
    real ones, or filtered. Rows of `augmentation_seeds`; `progress`: (this plan's first unit, all
    units) of the run's bar."""
    import torch

    from workbench.jobs.diffusion import synthetic

    unit, units = progress
    k, seed_s = task.num_classes, spec.seed + plan.seed
    real_x, real_y = task.x_train[plan.idx], task.y_train[plan.idx]
    real_net, scores = real or score(ctx, task, cfg, seed_s, real_x, real_y)
    results = [(REAL, 0.0, 0, scores)]
    ctx.progress((unit := unit + 1) * 1000, units * 1000)
    keep = None
    if spec.filter:
        keep = judged_correct(
            ctx, judge or real_net, syn, labels if judge else None, spec.filter.min_confidence
        )
    for r, n in per_class.items():
        sx, sy = synthetic.prefix(syn, n, k)
        for kind in types:
            ax, ay = balanced_prefix(syn, keep, n, k) if kind == FILTERED else (sx, sy)
            x, y = (ax, ay) if kind == SYNTHETIC else (torch.cat([real_x, ax]), torch.cat([real_y, ay]))
            _, scores = score(ctx, task, cfg, seed_s, x, y)
            results.append((kind, r, len(ax), scores))
            ctx.progress((unit := unit + 1) * 1000, units * 1000)
    return [
        {
            "dataset_type": kind,
            "real_per_class": plan.label,
            "synthetic_ratio": r,
            "seed": plan.seed,
            "dataset_size": scores["dataset_size"],
            "synthetic_images": n_synthetic,
            **scores,
        }
        for kind, r, n_synthetic, scores in results
    ]


def nearness(synthetic: torch.Tensor, real: torch.Tensor, test: torch.Tensor, sample: int = 2000) -> dict:
    """Does the generator copy its real images? The RMS pixel distance from each synthetic image to its
    nearest real training image, next to the same for the real test images (fresh draws of the data):
    medians, and the share of synthetic images nearer than 99 % of test images are (near copies).
    Over at most `sample` images of each (seeded), so a large real subset stays cheap."""
    import torch

    def nearest(x):
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:sample]]
        return torch.cat([torch.cdist(c.flatten(1), real.flatten(1)).min(1).values for c in x.split(500)])

    pixels = real[0].numel() ** 0.5
    d_syn, d_test = nearest(synthetic) / pixels, nearest(test) / pixels
    close = torch.quantile(d_test, 0.01)
    return {
        "synthetic_nn_median": float(d_syn.median()),
        "test_nn_median": float(d_test.median()),
        "near_copy_share": float((d_syn < close).float().mean()),
    }


def copying_summary(copies: list[dict], n) -> dict:
    from workbench.jobs.metrics.stats import mean_ci

    out = {}
    for key in ("synthetic_nn_median", "test_nn_median", "near_copy_share"):
        out.update(mean_ci([c[key] for c in copies if c["real_per_class"] == n]).summary(key))
    low, high = out["near_copy_share_ci"]  # a share: its t-interval clipped to [0, 1]
    out["near_copy_share_ci"] = [max(0.0, low), min(1.0, high)]
    return out


def score(ctx: RunContext, task: ImageData, cfg, seed: int, x: torch.Tensor, y: torch.Tensor):
    """Train a classifier on (x, y); its risk on them, and its risk and accuracy on the whole test split."""
    from workbench.jobs.classify import assess, train_classifier
    from workbench.jobs.context import RunCancelled

    if ctx.should_stop():
        raise RunCancelled
    net = train_classifier(x, y, task.num_classes, cfg, seed, ctx.device, ctx.should_stop)
    if net is None:
        raise RunCancelled
    train, test = assess(net, x, y, ctx.device), assess(net, task.x_test, task.y_test, ctx.device)
    return net, {
        "dataset_size": len(x),
        "train_risk": train.risk,
        "test_risk": test.risk,
        "test_accuracy": test.accuracy,
    }


def judged_correct(ctx: RunContext, judge, syn, labels: list[int] | None, min_confidence: float):
    """Which synthetic images the judge classifies as their label with at least min_confidence. labels:
    the judge's label of each task class, when it knows more classes than the task (the reference)."""
    import torch

    from workbench.jobs.classify import assess

    y = syn.y if labels is None else torch.as_tensor(labels, dtype=torch.long)[syn.y]
    judged = assess(judge, syn.x, y, ctx.device)
    return (judged.predictions == y.numpy()) & (judged.confidence >= min_confidence)


def restrict_to(task: ImageData, x, y) -> ImageData:
    """The data a generator is trained on: the real subset, and no test image at all."""
    from workbench.jobs.data.images import ImageData

    return ImageData(task.name, x, y, x[:0], y[:0], task.class_names)


def subset_generator_key(spec: Spec, x, y, task: ImageData, seed: int) -> str:
    """A generator trained on one subset is known by that subset's images and labels, its recipe and seed."""
    import hashlib
    import json

    h = hashlib.sha256(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    d = spec.diffusion
    recipe = {
        "classes": task.class_names,
        "schedule": d.schedule,
        "timesteps": d.timesteps,
        "model": d.model.model_dump(),
        "train": d.train.model_dump(),
        "seed": seed,
    }
    h.update(json.dumps(recipe, sort_keys=True).encode())
    return h.hexdigest()[:24]


def balanced_prefix(syn, keep, per_class: int, k: int):
    """The kept images among the first per_class of each class, cut to the same count for every class."""
    import numpy as np

    first = np.arange(len(syn.y)) < per_class * k
    chosen = keep & first
    m = min(int((chosen & (syn.y.numpy() == c)).sum()) for c in range(k))
    idx = np.concatenate([np.flatnonzero(chosen & (syn.y.numpy() == c))[:m] for c in range(k)])
    idx.sort()
    return syn.x[idx], syn.y[idx]


class Labeller:
    """A classifier's label for an image among the task's classes. `among`: the classifier's label of each
    task class, when it knows more classes than the task (the reference): a draw it calls a class outside
    the task gets -1, and is dropped."""

    def __init__(self, net, among: list[int] | None = None):
        self.net, self.among = net, among

    def __call__(self, x, device):
        import torch

        from workbench.jobs.classify import assess

        labels = torch.from_numpy(
            assess(self.net, x, torch.zeros(len(x), dtype=torch.long), device).predictions
        )
        if self.among is None:
            return labels
        task = torch.full((max(labels.max().item(), max(self.among)) + 1,), -1, dtype=torch.long)
        task[self.among] = torch.arange(len(self.among))
        return task[labels]


MAX_DRAWS_PER_IMAGE = 20  # an unconditional model drawn for labels stops at 20 draws per image kept


def labelled_draws(ctx, fixed, g, labeller, k: int, per_class: int, seed: int):
    """(x, y in cycling order, seconds, draws): an unconditional model drawn in rounds, each draw labelled by
    `labeller` (draws it calls no class of the task are dropped), until every class has per_class images
    (the first ones of each, in draw order); a class it
    rarely draws fails the run, naming the class and the counts, after MAX_DRAWS_PER_IMAGE x k x per_class."""
    import torch

    from workbench.jobs.diffusion import synthetic

    need, limit = k * per_class, MAX_DRAWS_PER_IMAGE * k * per_class
    xs, ys, seconds, drawn, r = [], [], 0.0, 0, 0
    counts = torch.zeros(k, dtype=torch.long)
    while (counts < per_class).any():
        if drawn >= limit:
            short = int(torch.argmin(counts))
            raise ValueError(
                f"diffusion.label_with: in {drawn} draws the {g.label_with} classifier called only "
                f"{int(counts[short])} images class {short} (of {per_class} needed): the model rarely draws it"
            )
        m = min(need, limit - drawn)
        x, sec = synthetic.generate(
            fixed.model,
            fixed.schedule,
            fixed.source.shape,
            [0],
            m,
            g.sampler.name,
            g.sampler.steps,
            1.0,
            seed=seed + 1_000_003 * r,
            batch_size=g.batch_size,
            eta=g.sampler.eta,
            device=ctx.device,
        )
        y = labeller(x, ctx.device)  # -1: a class outside the task's
        xs.append(x)
        ys.append(y)
        counts += torch.bincount(y[y >= 0], minlength=k)
        seconds, drawn, r = seconds + sec, drawn + m, r + 1
    x, y = torch.cat(xs), torch.cat(ys)
    # the first per_class of each class, interleaved as every synthetic set is (any prefix balanced)
    order = torch.stack([torch.nonzero(y == c)[:per_class, 0] for c in range(k)], 1).flatten()
    return x[order], y[order], seconds, drawn


def outside_data(model: str) -> str:
    return (
        f"diffusion.allow_outside_data: {model} is a published model, trained on images outside every real "
        "subset (nothing here says otherwise): its samples would carry images the real-only classifier never "
        "sees. Set diffusion.allow_outside_data: true to use it anyway"
    )


def check_labelling(label_with, w: float, field: str) -> None:
    """An unconditional generator's draws are labelled by a classifier, and it has no guidance."""
    if label_with is None:
        raise ValueError(
            f"{field}: an unconditional model cannot draw images of a given class; set diffusion.label_with: "
            "real (each draw labelled by the seed's real-only classifier) or reference (an oracle), or use a "
            "class-conditional model"
        )
    if w != 1.0:
        raise ValueError(
            f"diffusion.guidance_scale {w:g}: an unconditional model has no guidance; set guidance_scale: 1"
        )


class FixedGenerator:
    """One model used for every real subset: a finished images run's (diffusion.model_run) or a published
    one (diffusion.model: {pretrained: ...})."""

    def __init__(self, ctx: RunContext, spec: Spec, data: ImageData, labels: list[int]):
        g = spec.diffusion
        if g.published is not None:
            field = "diffusion.model"
            src = image_model.published_model(ctx, g.published, spec.seed, field)
            ctx.summary(pretrained=src.record)
        else:
            field = f"diffusion.model_run {g.model_run}"
            src = image_model.finished_model(ctx, g.model_run, "diffusion.model_run")
        self.labels_draws = src.model.num_classes == 0
        if self.labels_draws:
            check_labelling(g.label_with, g.guidance_scale, field)
        else:
            check_guidance(
                1,
                src.model.null_class is not None,
                g.guidance_scale,
                "diffusion.guidance_scale",
                "diffusion.model.class_null",  # (a workbench run's class model always has one)
            )
            if g.label_with is not None:
                raise ValueError(
                    f"diffusion.label_with: {field} is class-conditional: it draws each class itself"
                )
        if src.shape != data.shape:
            raise ValueError(f"{field}: its images are {src.shape}, these are {data.shape}")
        names = [data.class_names[i] for i in labels]
        if self.labels_draws:
            self.model_labels = list(labels)  # what the draws are labelled with: the task's classes
        elif src.data is None:  # a published model named without its data: its labels are taken as these
            if src.model.num_classes != data.num_classes:
                raise ValueError(
                    f"{field}: it draws {src.model.num_classes} classes, {data.name} has {data.num_classes}; "
                    f"name the images it was made for ({field}.data) so its classes can be matched by name"
                )
            self.model_labels = list(labels)
        else:
            if missing := [c for c in names if c not in src.class_names]:
                raise ValueError(
                    f"{field}: it has no class {missing[0]!r} (its classes: {', '.join(src.class_names)})"
                )
            self.model_labels = [src.class_names.index(c) for c in names]
        self.model, self.schedule, self.source = src.model, src.schedule, src
        self.key = image_model.weights_digest(src.model)

    def check_subsets(self, task: ImageData, plans: list[Plan], allowed: bool) -> None:
        """Refuse (unless allowed) when the model saw any image outside a real subset: the real-only
        classifier it is compared with never saw those."""
        import hashlib

        def digests(x) -> set[bytes]:
            return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x.numpy()}

        if self.source.record is not None:  # a published model: what it was trained on is not known here
            if not allowed:  # (refused at submit already)
                raise ValueError(outside_data(self.source.name))
            return
        trained = digests(self.source.data.x_train)
        for plan in plans:
            subset = digests(task.x_train[plan.idx])
            if not trained <= subset and not allowed:
                raise ValueError(
                    f"diffusion.model_run {self.source.run_id} was trained on {len(trained)} "
                    f"{self.source.data.name} images, {len(trained - subset)} of them outside the real "
                    f"subset of real_per_class {plan.label}, seed {plan.seed}: its samples would carry images the "
                    "real-only classifier never sees. Set diffusion.allow_outside_data: true to use it anyway"
                )


def reference_judge(ctx: RunContext, spec: Spec, data: ImageData):
    from workbench.jobs.metrics import reference

    judge, _ = reference.load_or_train(ctx.cache_dir("reference"), data, ctx.device, log=ctx.event)
    ctx.event(
        "filter: judged by the reference classifier, trained on the whole training split: the filtered "
        "setting uses labels beyond the real subset (an oracle)"
    )
    return judge.net


def show_sets(ctx: RunContext, label, real_x, real_y, syn, k: int, cols: int = 8) -> None:
    """The first seed's real subset and synthetic images, one row per class (up to 10)."""
    import torch

    from workbench.jobs.figures import grid_image

    rows = min(k, 10)

    def grid(x, y):
        cells = []
        for c in range(rows):
            mine = x[y == c][:cols]
            cells.append(torch.cat([mine, torch.ones(cols - len(mine), *x.shape[1:])]))  # white padding
        return grid_image(torch.cat(cells), rows, cols)

    ctx.image(f"real/n{label}", None, grid(real_x, real_y))
    ctx.image(f"synthetic/n{label}", None, grid(syn.x, syn.y))


def aggregate(per_seed: list[dict], real_counts: list) -> list[dict]:
    """One row per setting: means over seeds, accuracy with its t-interval, the paired gain over real only,
    and a verdict that holds over the whole run: the paired t-test of every gain, Holm-corrected over all of
    them at 5 % (p_difference is the adjusted p-value)."""
    import numpy as np

    from workbench.jobs.metrics.stats import CONFIDENCE, holm, mean_ci, paired_ci, paired_tests

    settings = list(
        dict.fromkeys((r["dataset_type"], r["real_per_class"], r["synthetic_ratio"]) for r in per_seed)
    )
    rows = []
    for kind, label, ratio in settings:
        mine = sorted(
            (
                r
                for r in per_seed
                if (r["dataset_type"], r["real_per_class"], r["synthetic_ratio"]) == (kind, label, ratio)
            ),
            key=lambda r: r["seed"],
        )
        acc = [r["test_accuracy"] for r in mine]
        a = mean_ci(acc)
        sizes = [r["dataset_size"] for r in mine]
        row = {
            "dataset_type": kind,
            "real_per_class": label,
            "synthetic_ratio": ratio,
            "dataset_size": sizes[0] if len(set(sizes)) == 1 else float(np.mean(sizes)),
            "train_risk": float(np.mean([r["train_risk"] for r in mine])),
            "test_risk": float(np.mean([r["test_risk"] for r in mine])),
            "test_accuracy_mean": a.value,
            "test_accuracy_ci_low": max(0.0, a.low),  # an accuracy: its t-interval clipped to [0, 1]
            "test_accuracy_ci_high": min(1.0, a.high),
            "seeds": a.n,
            "gain_mean": None,
            "gain_ci_low": None,
            "gain_ci_high": None,
            "p_difference": None,
            "verdict": None,
        }
        if kind != REAL:
            base = sorted(
                (r for r in per_seed if r["dataset_type"] == REAL and r["real_per_class"] == label),
                key=lambda r: r["seed"],
            )
            base_acc = [r["test_accuracy"] for r in base]
            gain = paired_ci(acc, base_acc)
            row.update(
                gain_mean=gain.value,
                gain_ci_low=max(-1.0, gain.low),
                gain_ci_high=min(1.0, gain.high),
                p_difference=paired_tests(np.subtract(acc, base_acc), 0.0)[0],
            )
        rows.append(row)
    compared = [r for r in rows if r["p_difference"] is not None]
    raw = [1.0 if np.isnan(r["p_difference"]) else r["p_difference"] for r in compared]
    for r, p in zip(compared, holm(raw), strict=True):
        significant = p <= 1 - CONFIDENCE
        r.update(
            p_difference=p,
            verdict="helps"
            if significant and r["gain_mean"] > 0
            else "hurts"
            if significant
            else "unresolved",
        )
    order = {label: i for i, label in enumerate(real_counts)}
    kinds = {REAL: 0, MIXED: 1, FILTERED: 2, SYNTHETIC: 3}
    return sorted(
        rows, key=lambda r: (order[r["real_per_class"]], kinds[r["dataset_type"]], r["synthetic_ratio"])
    )


def headline(rows: list[dict], per_seed: list[dict], real_counts: list) -> dict:
    """At the smallest real count: real only, and real + synthetic at its best ratio, with the gain."""
    from workbench.jobs.metrics.stats import mean_ci

    n = real_counts[0]
    at = [r for r in rows if r["real_per_class"] == n]
    mixed = [r for r in at if r["dataset_type"] == MIXED]
    out: dict = {"headline_real_per_class": n}

    def accuracies(kind, ratio):
        return [
            r["test_accuracy"]
            for r in sorted(per_seed, key=lambda r: r["seed"])
            if (r["dataset_type"], r["real_per_class"], r["synthetic_ratio"]) == (kind, n, ratio)
        ]

    out.update(mean_ci(accuracies(REAL, 0.0)).summary("real_accuracy"))
    if mixed:
        best = max(mixed, key=lambda r: r["gain_mean"])
        out["best_ratio"] = best["synthetic_ratio"]
        out.update(mean_ci(accuracies(MIXED, best["synthetic_ratio"])).summary("augmented_accuracy"))
        out.update(
            gain=best["gain_mean"],
            gain_ci=[best["gain_ci_low"], best["gain_ci_high"]],
            gain_n=best["seeds"],
            verdict=best["verdict"],
        )
    for key in ("real_accuracy", "augmented_accuracy"):  # accuracies: intervals clipped to [0, 1]
        if f"{key}_ci" in out:
            out[f"{key}_ci"] = [max(0.0, out[f"{key}_ci"][0]), min(1.0, out[f"{key}_ci"][1])]
    return out


def plain_log_axis(ax, ticks: list[float]) -> None:
    """A log x axis labelled at these values as plain numbers (no 2 x 10^0 minor labels)."""
    from matplotlib.ticker import NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def accuracy_figure(rows: list[dict], spec: Spec, k: int):
    """Left: test accuracy against real images per class, a line per training set (95 % intervals).
    Right: the paired gain over real only against the ratio, a line per real count."""
    import numpy as np

    from workbench.jobs.figures import pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x_of = {}
    for label in spec.real_per_class:
        sizes = [
            r["dataset_size"] for r in rows if r["real_per_class"] == label and r["dataset_type"] == REAL
        ]
        x_of[label] = label if label != "all" else float(np.mean(sizes)) / k
    lines = list(dict.fromkeys((r["dataset_type"], r["synthetic_ratio"]) for r in rows))
    for kind, ratio in lines:
        line = [r for r in rows if (r["dataset_type"], r["synthetic_ratio"]) == (kind, ratio)]
        xs = [x_of[r["real_per_class"]] for r in line]
        ys = [r["test_accuracy_mean"] for r in line]
        err = [
            [y - r["test_accuracy_ci_low"] for y, r in zip(ys, line, strict=True)],
            [r["test_accuracy_ci_high"] - y for y, r in zip(ys, line, strict=True)],
        ]
        label = "real only" if kind == REAL else f"{kind} x{ratio:g}"
        left.errorbar(
            xs, ys, yerr=err, marker="o", capsize=3, label=label, linestyle="-" if kind != SYNTHETIC else ":"
        )
    plain_log_axis(left, sorted(set(x_of.values())))
    left.set_xlabel("real images per class")
    left.set_ylabel("test accuracy")
    left.set_title(f"{spec.data.name}, {spec.seeds} seeds")
    left.legend(fontsize=7)
    for label in spec.real_per_class:
        for kind in (MIXED, FILTERED, SYNTHETIC):
            line = [r for r in rows if r["real_per_class"] == label and r["dataset_type"] == kind]
            if not line:
                continue
            xs = [r["synthetic_ratio"] for r in line]
            ys = [r["gain_mean"] for r in line]
            err = [
                [y - r["gain_ci_low"] for y, r in zip(ys, line, strict=True)],
                [r["gain_ci_high"] - y for y, r in zip(ys, line, strict=True)],
            ]
            right.errorbar(
                xs,
                ys,
                yerr=err,
                marker="o",
                capsize=3,
                label=f"n={label} {kind}",
                linestyle="-" if kind != SYNTHETIC else ":",
            )
    right.axhline(0, color="gray", linewidth=1)
    plain_log_axis(right, [r for r in spec.ratios if r > 0])
    right.set_xlabel("synthetic images per real image")
    right.set_ylabel("gain over real only (paired)")
    right.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
