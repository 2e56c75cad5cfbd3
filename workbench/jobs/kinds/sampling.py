"""sampling: accelerated samplers against the full DDPM chain, on one trained image model.

Method:
1. The model: the EMA weights of a finished `images` run (model_run: its id), one trained first in
   this run from an embedded `images` spec (train: ...), through the same training loop, or a published
   diffusers UNet with its own schedule and prediction type (model: {pretrained: ..., data: ...}).
2. Every sampler in the list (diffusers DDPM, DDIM with eta, DPM-Solver++ 2M and its SDE variant,
   UniPC, Euler, each built from the model's training schedule and prediction type) at every step
   count, on the same seeds, labels and guidance scale; the reference row is DDPM over all training
   timesteps (1000 for the paper preset).
3. Per (sampler, steps), over R = eval_sets sets of N = n_samples samples, every sampler starting set k
   from the same noise: NFE (both passes of guidance counted), wall time, images per second, class
   accuracy (Wilson interval), classifier-FID and -KID by the dataset's reference classifier (see
   jobs.metrics.reference; not Inception FID) as mean and t-interval over the R sets, next to the real
   floor at the same N; and the FID's paired difference from the reference row's, set by set, with its
   interval.
4. Verdicts over every (sampler, steps) row at once, the family-wise error held at 5 % (Holm over a
   paired t-test and an equivalence test per row): "better" (below the reference), "matches" (within
   +-margin by two one-sided tests; margin = match_margin x the reference's excess FID over the real
   floor, in classifier-FID units), "worse", or "unresolved". fewest_nfe_matching_reference is the
   cheapest "better" or "matches" row; with the reference at or below the floor nothing can match.
Pictures: classifier-FID against NFE per sampler with interval bars, and the first samples of every row
side by side (same noise, so rows differ only by the sampler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from workbench.jobs.diffusion import image_model
from workbench.jobs.diffusion.config import InceptionOptions, SamplerName, Strict, check_guidance
from workbench.jobs.diffusion.image_model import WithImageModel
from workbench.jobs.figures import grid_image, pyplot

# imported by run(); the worker loads them once, up front
PRELOAD = (
    *image_model.PRELOAD,
    "workbench.jobs.metrics.reference",
    "workbench.jobs.metrics.stats",
    "scipy.stats",
    "matplotlib.pyplot",
)
HEADLINE = ("reference_classifier_fid",)  # the summary keys the runs list shows first

if TYPE_CHECKING:  # torch and the rest are imported where they run: validating a spec stays fast
    import torch

    from workbench.jobs.context import RunContext


class SamplerChoice(Strict):
    name: SamplerName
    eta: float = Field(0.0, ge=0, le=1.0, description="DDIM stochasticity (0: deterministic)")


class Spec(WithImageModel, InceptionOptions):
    kind: Literal["sampling"] = "sampling"
    samplers: list[SamplerChoice] = Field(
        default_factory=lambda: [
            SamplerChoice(name=n) for n in ("ddim", "dpmsolver++", "sde-dpmsolver++", "unipc", "euler")
        ],
        min_length=1,
        max_length=16,
    )
    steps: list[int] = Field(
        [10, 20], min_length=1, max_length=32, description="step counts to try per sampler"
    )
    guidance_scale: float = Field(1.0, ge=0, le=100)
    n_samples: int = Field(200, ge=10, le=1_000_000, description="N: samples per evaluation set")
    eval_sets: int = Field(
        5,
        ge=2,
        le=100,
        description="R: sample sets per sampler, each starting from the "
        "same noise for every sampler (paired comparisons)",
    )
    batch_size: int = Field(500, ge=1, le=100_000)
    grid_columns: int = Field(10, ge=1, le=32, description="samples per row in the side-by-side grid")
    match_margin: float = Field(
        0.10,
        gt=0,
        le=1,
        description="a sampler matches the full chain when its classifier-FID is within this share of the "
        "chain's excess over the real floor (equivalence test, Holm-corrected over the run)",
    )

    PRESETS = {
        # Trains a tiny digits model first (100-step chain so that the full-DDPM reference stays quick).
        "smoke": {
            "train": {
                "kind": "images",
                "preset": "smoke",
                "timesteps": 100,
                "train": {"steps": 100, "checkpoint_every": 50},
            },
            "n_samples": 150,
            "eval_sets": 3,
            "steps": [5, 10],
        },
        # Trains the images paper model (MNIST) first; model_run: ID samples one trained before instead.
        "paper": {
            "train": {"kind": "images", "preset": "paper"},
            "steps": [5, 10, 20, 50],
            "n_samples": 2000,
            "eval_sets": 5,
            "batch_size": 2500,
        },
    }

    @model_validator(mode="after")
    def _steps_increase(self):
        if self.steps != sorted(set(self.steps)) or self.steps[0] < 1:
            raise ValueError("steps must be distinct and increasing, e.g. [5, 10, 20]")
        if self.model is not None:
            if self.model.data is None:
                raise ValueError(
                    "model.data: name the images the model was made for, the reference of its FID "
                    "(google/ddpm-cifar10-32: {name: cifar10})"
                )
            if (found := self.model.found()) is not None:  # a folder here, or in the Hub cache
                classes = found.classes(self.model)
                check_guidance(classes, classes > 0 and self.model.class_null, self.guidance_scale)
        if self.train is not None:
            conditional = self.train.model.conditional
            check_guidance(conditional, conditional, self.guidance_scale)
        return self


def run(ctx: RunContext, spec: Spec) -> None:
    """The paper's steps: the model and a reference classifier to judge its samples, every sampler at
    every step count on the same noise and sets, verdicts against the full chain, the report."""
    from workbench.jobs.metrics import reference
    from workbench.jobs.metrics.inception import maybe_inception_fid
    from workbench.jobs.metrics.stats import summary_entry

    inception = maybe_inception_fid(spec, ctx.device)  # first: a missing network fails before any training
    source = image_model.source_model(ctx, spec)
    check_guidance(source.model.num_classes, source.model.null_class is not None, spec.guidance_scale)
    judge, _ = reference.load_or_train(ctx.cache_dir("reference"), source.data, ctx.device, log=ctx.event)
    ctx.summary(reference_accuracy=judge.test_accuracy)
    if inception is not None:
        inception.set_real(spec.inception_real(source.data))
    rows, strips, per_set_fid = sample_every_config(ctx, spec, source, judge, inception)
    margin = judge_against_chain(ctx, spec, rows, per_set_fid)
    ctx.table("samplers", rows)
    ctx.image("fid_vs_nfe", None, quality_plot(rows))
    ctx.image("samplers_side_by_side", None, side_by_side(rows, strips))
    ctx.summary(**headline(spec, rows, margin))
    if inception is not None:
        ctx.summary(**{f"reference_{k}": v for k, v in summary_entry(rows[0], "inception_fid").items()})


def sample_every_config(ctx: RunContext, spec: Spec, source, judge, inception):
    """(a row per sampler and step count, the first row of each's images, each's classifier-FID per
    set): the full DDPM chain first (the reference), then every configuration, all from the same noise
    and judged on the same sets of test images."""
    import torch

    from workbench.jobs.diffusion.samplers import sample_batched, sampling_timesteps
    from workbench.jobs.metrics.stats import Estimate, paired_ci

    data, model, schedule = source.data, source.model, source.schedule
    conditional = model.num_classes > 0
    n, sets = spec.n_samples, spec.eval_sets
    y = (torch.arange(n, device=ctx.device) % data.num_classes).repeat(sets) if conditional else None
    floor = judge.floor(data.x_train, data.x_test, n, sets, seed=spec.seed)
    full = sampling_timesteps(schedule)  # the whole chain (996 steps for the cosine schedule)
    configs = [("ddpm", full, 0.0)] + [
        (s.name, k, s.eta) for s in spec.samplers for k in spec.steps if not (s.name == "ddpm" and k >= full)
    ]
    ctx.phase("sampling and scoring", len(configs))
    rows, strips, per_set_fid, per_set_inception = [], [], [], []
    for i, (name, steps, eta) in enumerate(configs):
        r = sample_batched(
            model,
            schedule,
            name,
            steps,
            (n * sets, *data.shape),
            y,
            spec.guidance_scale,
            model.null_class if conditional else None,
            seed=spec.seed + 1,
            batch_size=spec.batch_size,
            eta=eta,
            device=ctx.device,
        )
        if not torch.isfinite(r.x).all():
            raise FloatingPointError(f"{name} with {steps} steps produced non-finite images")
        quality, per_set = judge.quality(r.x, y, data.x_test, sets, inception)
        row = {
            "sampler": name + (f" eta={eta:g}" if eta else ""),
            "steps": steps,
            "nfe": r.nfe,
            "seconds": r.seconds,
            "images_per_second": n * sets / r.seconds,
            **quality,
            **floor,
        }
        per_set_fid.append(per_set["classifier_fid"])
        per_set_inception.append(per_set.get("inception_fid"))
        compared = " (the reference)"
        if len(per_set_fid) > 1:  # set k against the reference's set k: same noise, same test images
            diff = paired_ci(per_set["classifier_fid"], per_set_fid[0])
            row.update(diff.columns("fid_minus_reference"))
            compared = f", minus the reference's {diff}"
            if inception is not None:
                row.update(
                    paired_ci(per_set["inception_fid"], per_set_inception[0]).columns(
                        "inception_fid_minus_reference"
                    )
                )
        rows.append(row)
        strips.append(r.x[: spec.grid_columns].cpu())
        ctx.progress(i + 1, len(configs))
        ctx.event(
            f"{row['sampler']} {steps} steps: NFE {r.nfe}, {r.seconds:.2f} s, classifier-FID "
            f"{Estimate.from_columns(row, 'classifier_fid')}{compared}"
        )
    return rows, strips, per_set_fid


def judge_against_chain(ctx: RunContext, spec: Spec, rows: list[dict], per_set_fid: list) -> float:
    """Each configuration's verdict against the chain (better, matches, worse, unresolved: paired tests
    and TOST under Holm), written into its row; returns the margin, a share of what the chain leaves to
    gain over real images, in classifier-FID."""
    import numpy as np

    from workbench.jobs.metrics.stats import verdicts

    ref = rows[0]
    margin = spec.match_margin * (ref["classifier_fid"] - ref["classifier_fid_floor"])
    reference = np.asarray(per_set_fid[0])
    for row, judged in zip(
        rows[1:], verdicts([np.asarray(f) - reference for f in per_set_fid[1:]], margin), strict=True
    ):
        row.update(judged, margin_classifier_fid=margin)
    ctx.event(
        f"verdicts against the chain, margin {margin:.4g} classifier-FID, Holm over {2 * (len(rows) - 1)} "
        "tests: " + ", ".join(f"{r['sampler']} {r['steps']} {r['verdict']}" for r in rows[1:])
    )
    return margin


def headline(spec: Spec, rows: list[dict], margin: float) -> dict:
    """The summary: the chain's classifier-FID and its floor, and the fewest NFE that match it."""
    from workbench.jobs.metrics.stats import summary_entry

    ref = rows[0]
    matching = [r for r in rows[1:] if r["verdict"] in ("better", "matches")]
    best = min(matching, key=lambda r: (r["nfe"], r["classifier_fid"])) if matching else None
    return dict(
        **{f"reference_{k}": v for k, v in summary_entry(ref, "classifier_fid").items()},
        reference_nfe=ref["nfe"],
        classifier_fid_samples=spec.n_samples,
        **summary_entry(ref, "classifier_fid_floor"),
        match_margin=spec.match_margin,
        margin_classifier_fid=margin,
        verdicts_familywise_alpha=0.05,
        verdicts_compared=len(rows) - 1,
        fewest_nfe_matching_reference=best
        and {
            "sampler": best["sampler"],
            "steps": best["steps"],
            "nfe": best["nfe"],
            "classifier_fid": best["classifier_fid"],
            "fid_minus_reference_ci": [
                best["fid_minus_reference_ci_low"],
                best["fid_minus_reference_ci_high"],
            ],
            "verdict": best["verdict"],
        },
        nfe_saving=best and ref["nfe"] / best["nfe"],
    )


def quality_plot(rows: list[dict]):
    """classifier-FID against NFE per sampler, each point with its interval over the R sets; the reference
    (full DDPM chain) and the real floor as bands."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = rows[0]
    for name in dict.fromkeys(r["sampler"] for r in rows[1:]):
        pts = sorted(
            (r["nfe"], r["classifier_fid"], r["classifier_fid_ci_low"], r["classifier_fid_ci_high"])
            for r in rows[1:]
            if r["sampler"] == name
        )
        nfe, fid, low, high = (list(v) for v in zip(*pts, strict=True))
        ax.errorbar(
            nfe,
            fid,
            yerr=[
                [f - lo for f, lo in zip(fid, low, strict=True)],
                [h - f for f, h in zip(fid, high, strict=True)],
            ],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.axhspan(
        ref["classifier_fid_ci_low"],
        ref["classifier_fid_ci_high"],
        color="black",
        alpha=0.15,
        label=f"DDPM {ref['steps']} steps (95 % CI)",
    )
    ax.axhline(ref["classifier_fid"], color="black", linestyle="--")
    ax.axhspan(
        ref["classifier_fid_floor_ci_low"],
        ref["classifier_fid_floor_ci_high"],
        color="tab:green",
        alpha=0.2,
        label=f"real images, same N ({ref['classifier_fid_n']} sets)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("classifier-FID (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def side_by_side(rows: list[dict], strips: list[torch.Tensor]):
    """One row of samples per (sampler, steps), all from the same noise."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.0 * strips[0].shape[0], 1.1 * len(rows)), squeeze=False)
    for ax, row, x in zip(axes[:, 0], rows, strips, strict=True):
        ax.imshow(grid_image(x, 1, len(x)).pixels, cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(
            f"{row['sampler']}\n{row['steps']} st.", rotation=0, ha="right", va="center", fontsize=8
        )
    fig.tight_layout()
    plt.close(fig)
    return fig
