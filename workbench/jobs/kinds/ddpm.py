"""ddpm: train a class-conditional DDPM with classifier-free guidance, then sample and evaluate it.

Method, top to bottom:
1. Data: a generated 2D set (SwissRoll, two moons, 8 Gaussians) with an independent held-out set.
2. Model: eps_theta(x_t, t, y), a residual MLP with time and class embeddings; class id K (one
   past the last class) is the null class, trained by dropping labels with probability p.
3. Training: the shared loop in jobs.diffusion.train (AdamW, warm-up + cosine, EMA, checkpoints).
4. Sampling: each sampler in the spec (diffusers DDPM / DDIM ...) at each guidance scale w, with
   eps = eps_uncond + w (eps_cond - eps_uncond).
5. Evaluation over R = sample.eval_sets independent sample sets of n points each (drawn in one batch):
   - energy distance (unbiased) of set k to reference draw k (n_test fresh points of the data): mean and
     t-interval over the R sets;
   - its floor: the same for R real samples of n points with the sample sets' class balance (labels
     0, 1, ..., K-1, 0, ...; plain draws for unconditional samples, w = 0), floor draw k against
     reference draw k too, so the excess (model - floor) is a paired difference with its t-interval
     (0 inside it: no difference from real data that R sets of n can show);
   - the ratio of the two as V-statistics (a real sample of the same size scores 1), Fieller's interval;
   - for labelled data, the share of samples that land in their class's region per w, with its Wilson
     interval over all R * n samples; NFE and time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from workbench.jobs.data.names import Toy2DName
from workbench.jobs.diffusion.config import SamplerSpec, Strict, TrainSpec
from workbench.jobs.figures import pyplot
from workbench.jobs.spec import BaseSpec

# imported by run(); the worker loads them once, up front
PRELOAD = (
    "matplotlib.pyplot",
    "workbench.jobs.data.toy2d",
    "workbench.jobs.diffusion.denoisers",
    "workbench.jobs.diffusion.samplers",
    "workbench.jobs.diffusion.schedules",
    "workbench.jobs.diffusion.train",
    "workbench.jobs.metrics.distances",
    "workbench.jobs.metrics.stats",
    "scipy.stats",
)
HEADLINE = ("energy_distance_ratio", "energy_distance")  # the summary keys the runs list shows first

if TYPE_CHECKING:  # torch and the rest are imported where they run: validating a spec stays fast
    import numpy as np

    from workbench.jobs.context import RunContext


class ModelSpec(Strict):
    width: int = Field(64, ge=4, le=4096)
    depth: int = Field(3, ge=1, le=64)
    time_dim: int = Field(64, ge=4, le=1024, multiple_of=2)


class SampleSpec(Strict):
    # Many small sets beat few large ones: each set's distance (and the real floor's) has noise of about
    # 0.7x the finite-sample term whatever n is, so the ratio's interval narrows with R; n sets only how
    # small a difference shows. All R sets are drawn in one batch, so R costs no extra sampler steps.
    n_samples: int = Field(400, ge=2, le=1_000_000, description="n: samples per evaluation set")
    eval_sets: int = Field(
        20,
        ge=2,
        le=1000,
        description="R: independent sample sets (and real floor draws) "
        "behind each energy distance and its interval",
    )
    guidance_scales: list[float] = Field([0.0, 1.0, 3.0], min_length=1, max_length=64)
    samplers: list[SamplerSpec] = Field(
        default_factory=lambda: [SamplerSpec(name="ddpm", steps=1000), SamplerSpec(name="ddim", steps=50)],
        min_length=1,
        max_length=32,
    )


class Spec(BaseSpec):
    kind: Literal["ddpm"] = "ddpm"
    dataset: Toy2DName = "swissroll"
    n_train: int = Field(20_000, ge=2, le=10_000_000)
    n_test: int = Field(2000, ge=2, le=1_000_000, description="held-out points")
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = Field(1000, ge=2, le=10_000)
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    sample: SampleSpec = SampleSpec()

    PRESETS = {
        "smoke": {},
        "paper": {
            "n_train": 100_000,
            "model": {"width": 256, "depth": 4},
            "train": {
                "steps": 20_000,
                "batch_size": 1024,
                "lr": 1e-3,
                "ema_decay": 0.999,
                "checkpoint_every": 2000,
            },
            "sample": {"eval_sets": 8},
        },
    }


def run(ctx: RunContext, spec: Spec) -> None:
    """The paper's steps: the data and the denoiser, training, every sampler at every guidance scale
    against real-data floors, the headline."""
    import torch

    torch.manual_seed(spec.seed)  # the denoiser's initial weights
    data, schedule, model = prepare(ctx, spec)
    ctx.phase("training the denoiser", spec.train.steps)
    ema_model = train_denoiser(ctx, spec, data, schedule, model)
    rows = evaluate(ctx, spec, data, schedule, ema_model)
    ctx.table("samplers", rows)
    ctx.summary(**headline(spec, rows, labelled=data.num_classes > 0))


def prepare(ctx: RunContext, spec: Spec):
    """(data, schedule, denoiser on ctx.device); shows the forward process on the held-out points."""
    from workbench.jobs.data.toy2d import load_toy2d
    from workbench.jobs.diffusion.denoisers import MLPDenoiser
    from workbench.jobs.diffusion.schedules import make_schedule

    data = load_toy2d(spec.dataset, spec.n_train, spec.n_test, spec.seed)
    schedule = make_schedule(spec.schedule, spec.timesteps)
    model = MLPDenoiser(2, spec.model.width, spec.model.depth, data.num_classes, spec.model.time_dim).to(
        ctx.device
    )
    ctx.event(
        f"{spec.dataset}: {len(data.x_train)} train / {len(data.x_test)} held-out points, "
        f"{data.num_classes or 'no'} classes; {sum(p.numel() for p in model.parameters())} parameters on "
        f"{ctx.device}"
    )
    ctx.image("forward_process", None, forward_process_figure(schedule, data.x_test, spec.timesteps))
    return data, schedule, model


def train_denoiser(ctx: RunContext, spec: Spec, data, schedule, model):
    """The shared training loop on random batches of the training points; returns the EMA model."""
    import torch

    from workbench.jobs.diffusion.train import TrainConfig, train

    device, labelled = ctx.device, data.num_classes > 0
    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device) if labelled else None
    gen = torch.Generator(device).manual_seed(spec.seed)

    def batches(g: torch.Generator):
        idx = torch.randint(0, len(x_train), (spec.train.batch_size,), device=device, generator=g)
        return x_train[idx], (y_train[idx] if labelled else None)

    null_class = model.null_class if labelled else None
    return train(ctx, model, schedule, batches, TrainConfig(**spec.train.model_dump()), gen, null_class)


def evaluate(ctx: RunContext, spec: Spec, data, schedule, ema_model) -> list[dict]:
    """Every sampler at every guidance scale, on the same R sample sets' seeds. Set k and real floor draw
    k are both measured against reference draw k (n_test fresh points of the data), so their difference
    cancels the reference's own noise: the excess is a paired comparison."""
    import numpy as np
    import torch

    from workbench.jobs.data.toy2d import make_points
    from workbench.jobs.diffusion.samplers import sample
    from workbench.jobs.metrics.distances import energy_distance
    from workbench.jobs.metrics.stats import mean_ci, paired_ci, ratio_ci, share_ci

    device, labelled = ctx.device, data.num_classes > 0
    null_class = ema_model.null_class if labelled else None
    n, sets = spec.sample.n_samples, spec.sample.eval_sets
    y_np = np.arange(n) % data.num_classes if labelled else None
    y = torch.from_numpy(y_np).to(device) if labelled else None
    refs = [
        torch.from_numpy(make_points(spec.dataset, spec.n_test, 20_000 + spec.seed * 1000 + k)[0])
        for k in range(sets)
    ]
    scales = spec.sample.guidance_scales if labelled else [None]
    ctx.phase("sampling and scoring", len(spec.sample.samplers) * len(scales))
    floors = real_floors(spec, refs, y_np, labelled)
    rows = []
    for s_spec in spec.sample.samplers:
        for w in scales:
            eval_gen = torch.Generator(device).manual_seed(spec.seed + 1)
            r = sample(
                ema_model,
                schedule,
                s_spec.name,
                s_spec.steps,
                (n * sets, 2),
                y=y.repeat(sets) if labelled else None,
                w=w if labelled else 1.0,
                null_class=null_class,
                eta=s_spec.eta,
                generator=eval_gen,
                device=device,
            )
            xs = list(r.x.float().cpu().split(n))  # R independent sets of n
            floor_u, floor_v = floors[labelled and w != 0]
            floor = mean_ci(floor_u)
            model_u = [energy_distance(x, ref) for x, ref in zip(xs, refs, strict=True)]
            model_v = [energy_distance(x, ref, unbiased=False) for x, ref in zip(xs, refs, strict=True)]
            distance, excess = mean_ci(model_u), paired_ci(model_u, floor_u)
            # Fieller treats the two as independent; sharing references correlates them positively,
            # which only widens the interval (conservative)
            ratio = ratio_ci(model_v, floor_v)
            row = {
                "sampler": s_spec.name,
                "steps": s_spec.steps,
                "guidance_scale": w,
                "nfe": r.nfe,
                "seconds": r.seconds / sets,
                **distance.columns("energy_distance"),
                **floor.columns("energy_distance_floor"),
                **excess.columns("energy_distance_excess"),
                **ratio.columns("energy_distance_ratio"),
            }
            row["samples_per_second"] = n / row["seconds"]
            if labelled:
                pred = np.concatenate([data.classify(x.numpy()) for x in xs])
                accuracy = share_ci(int((pred == np.tile(y_np, sets)).sum()), len(pred))  # Wilson interval
                row.update(accuracy.columns("class_accuracy"))
            rows.append(row)
            ctx.progress(len(rows), len(spec.sample.samplers) * len(scales))
            label = f"{s_spec.name}_{s_spec.steps}" + (f"_w{w:g}" if labelled else "")
            ctx.image(f"samples/{label}", spec.train.steps, scatter_figure(xs[0].numpy(), y, data, row))
            ctx.event(
                f"{label}: energy distance {distance}, real floor {floor}, excess {excess}, ratio to a "
                f"real sample {ratio}" + (f"; class accuracy {accuracy}" if labelled else "")
            )
    return rows


def real_floors(spec: Spec, refs: list, y_np, labelled: bool) -> dict[bool, tuple[list, list]]:
    """The floor: R real samples with the sample sets' size and class balance, each against its
    reference draw (unbiased and plain energy distance). Unconditional samples (w = 0) ignore their
    labels, so theirs is R plain draws of the data (balance alone moves the distance: on the 8-Gaussian
    mixture at n = 400 a balanced real sample scores -0.005). Keyed by `balanced`."""
    import torch

    from workbench.jobs.data.toy2d import make_points
    from workbench.jobs.metrics.distances import energy_distance

    n, sets = spec.sample.n_samples, spec.sample.eval_sets
    floors = {}
    for balanced in (True, False) if labelled else (False,):
        draws = [
            torch.from_numpy(
                make_points(spec.dataset, n, 10_000 + spec.seed * 1000 + k, y_np if balanced else None)[0]
            )
            for k in range(sets)
        ]
        floors[balanced] = (
            [energy_distance(x, ref) for x, ref in zip(draws, refs, strict=True)],
            [energy_distance(x, ref, unbiased=False) for x, ref in zip(draws, refs, strict=True)],
        )
    return floors


def headline(spec: Spec, rows: list[dict], labelled: bool) -> dict:
    """The run's summary: the first sampler's row (at w = 1, or unguided), and its class accuracy at
    every guidance scale."""
    from workbench.jobs.metrics.stats import summary_entry

    first = spec.sample.samplers[0]
    reference = [r for r in rows if r["sampler"] == first.name and r["steps"] == first.steps]
    top = next((r for r in reference if r["guidance_scale"] in (None, 1.0)), reference[0])
    summary = {"nfe": top["nfe"]}
    for key in (
        "energy_distance",
        "energy_distance_floor",
        "energy_distance_excess",
        "energy_distance_ratio",
    ):
        summary.update(summary_entry(top, key))
    if labelled:
        summary["guided_accuracy"] = {str(float(r["guidance_scale"])): r["class_accuracy"] for r in reference}
        summary["guided_accuracy_ci"] = {
            str(float(r["guidance_scale"])): [r["class_accuracy_ci_low"], r["class_accuracy_ci_high"]]
            for r in reference
        }
        summary["guided_accuracy_n"] = reference[0]["class_accuracy_n"]
    return summary


# --- pictures ------------------------------------------------------------------------------------


def forward_process_figure(schedule, x0: np.ndarray, timesteps: int):
    import torch

    from workbench.jobs.diffusion.schedules import q_sample

    plt = pyplot()
    ts = [0, timesteps // 20, timesteps // 10, timesteps // 4, timesteps // 2, timesteps - 1]
    x = torch.from_numpy(x0[:2000])
    g = torch.Generator().manual_seed(0)
    fig, axes = plt.subplots(1, len(ts), figsize=(2.2 * len(ts), 2.4), sharex=True, sharey=True)
    for ax, t in zip(axes, ts, strict=True):
        xt = q_sample(schedule, x, torch.full((len(x),), t), torch.randn(x.shape, generator=g)).numpy()
        ax.scatter(xt[:, 0], xt[:, 1], s=1, alpha=0.5)
        ax.set_title(f"t = {t}")
        ax.set_aspect("equal")
    fig.suptitle("forward process q(x_t | x_0)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def scatter_figure(x: np.ndarray, y, data, row: dict):
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(data.x_test[:, 0], data.x_test[:, 1], s=1, c="lightgray", label="held-out")
    colors = y.cpu().numpy() if y is not None else "tab:blue"
    ax.scatter(x[:, 0], x[:, 1], s=1, c=colors, cmap="tab10" if y is not None else None, label="samples")
    title = f"{row['sampler']} {row['steps']} steps"
    if row["guidance_scale"] is not None:
        title += f", w = {row['guidance_scale']:g}, acc {row['class_accuracy']:.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    lim = np.abs(data.x_test).max() * 1.3
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    fig.tight_layout()
    plt.close(fig)
    return fig
