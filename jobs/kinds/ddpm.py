"""ddpm: train a class-conditional DDPM with classifier-free guidance, then sample and evaluate it.

Method, top to bottom:
1. Data: a generated 2D set (SwissRoll, two moons, 8 Gaussians) with an independent held-out set.
2. Model: eps_theta(x_t, t, y), a residual MLP with time and class embeddings; class id K (one
   past the last class) is the null class, trained by dropping labels with probability p.
3. Training: the shared loop in jobs.diffusion.train (AdamW, warm-up + cosine, EMA, checkpoints).
4. Sampling: each sampler in the spec (diffusers DDPM / DDIM ...) at each guidance scale w, with
   eps = eps_uncond + w (eps_cond - eps_uncond).
5. Evaluation: energy distance of samples to held-out data next to the real-vs-real floor; for
   labelled data the fraction of samples that land in their class's region, per w; NFE and time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from jobs.diffusion.config import SamplerSpec, Strict, Toy2DName, TrainSpec
from jobs.figures import pyplot
from jobs.spec import BaseSpec

# imported by run(); the worker loads them once, up front
PRELOAD = (
    "matplotlib.pyplot", "jobs.data.toy2d", "jobs.diffusion.denoisers", "jobs.diffusion.samplers",
    "jobs.diffusion.schedules", "jobs.diffusion.train", "jobs.metrics.distances", "jobs.metrics.stats", "scipy.stats")

if TYPE_CHECKING:  # torch and the rest are imported where they run: validating a spec stays fast
    import numpy as np

    from jobs.context import RunContext


class ModelSpec(Strict):
    width: int = Field(64, ge=4, le=4096)
    depth: int = Field(3, ge=1, le=64)
    time_dim: int = Field(64, ge=4, le=1024, multiple_of=2)


class SampleSpec(Strict):
    n_samples: int = Field(2000, ge=2, le=1_000_000, description="samples per evaluation set")
    eval_sets: int = Field(4, ge=1, le=100, description="independent sample sets averaged in the energy distance")
    guidance_scales: list[float] = Field([0.0, 1.0, 3.0], min_length=1, max_length=64)
    samplers: list[SamplerSpec] = Field(
        default_factory=lambda: [SamplerSpec(name="ddpm", steps=1000), SamplerSpec(name="ddim", steps=50)],
        min_length=1, max_length=32)


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
        "paper": {"n_train": 100_000, "model": {"width": 256, "depth": 4},
                  "train": {"steps": 20_000, "batch_size": 1024, "lr": 1e-3, "ema_decay": 0.999,
                            "checkpoint_every": 2000},
                  "sample": {"eval_sets": 8}},
    }


def run(ctx: RunContext, spec: Spec) -> None:
    import numpy as np
    import torch

    from jobs.data.toy2d import load_toy2d, make_points
    from jobs.diffusion.denoisers import MLPDenoiser
    from jobs.diffusion.samplers import sample
    from jobs.diffusion.schedules import make_schedule
    from jobs.diffusion.train import TrainConfig, train
    from jobs.metrics.distances import energy_distance
    from jobs.metrics.stats import share_ci

    device = ctx.device
    torch.manual_seed(spec.seed)
    data = load_toy2d(spec.dataset, spec.n_train, spec.n_test, spec.seed)
    labelled = data.num_classes > 0
    schedule = make_schedule(spec.schedule, spec.timesteps)
    model = MLPDenoiser(2, spec.model.width, spec.model.depth, data.num_classes, spec.model.time_dim).to(device)
    null_class = model.null_class if labelled else None
    ctx.event(f"{spec.dataset}: {len(data.x_train)} train / {len(data.x_test)} held-out points, "
              f"{data.num_classes or 'no'} classes; {sum(p.numel() for p in model.parameters())} parameters on {device}")

    ctx.image("forward_process", None, forward_process_figure(schedule, data.x_test, spec.timesteps))

    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device) if labelled else None
    gen = torch.Generator(device).manual_seed(spec.seed)

    def batches(g: torch.Generator):
        idx = torch.randint(0, len(x_train), (spec.train.batch_size,), device=device, generator=g)
        return x_train[idx], (y_train[idx] if labelled else None)

    ema_model = train(ctx, model, schedule, batches, TrainConfig(**spec.train.model_dump()), gen, null_class)

    # Evaluation: every sampler at every guidance scale, on the same seeds.
    held_out = torch.from_numpy(data.x_test)
    n, sets = spec.sample.n_samples, spec.sample.eval_sets
    floor = float(np.mean([energy_distance(torch.from_numpy(make_points(spec.dataset, n, 10_000 + spec.seed * 100 + k)[0]),
                                           held_out) for k in range(sets)]))
    scales = spec.sample.guidance_scales if labelled else [None]
    rows = []
    for s_spec in spec.sample.samplers:
        for w in scales:
            eval_gen = torch.Generator(device).manual_seed(spec.seed + 1)
            y = torch.arange(n, device=device) % data.num_classes if labelled else None
            results = [sample(ema_model, schedule, s_spec.name, s_spec.steps, (n, 2), y=y, w=w if labelled else 1.0,
                              null_class=null_class, eta=s_spec.eta, generator=eval_gen, device=device)
                       for _ in range(sets)]
            xs = [r.x.float().cpu() for r in results]
            row = {"sampler": s_spec.name, "steps": s_spec.steps, "guidance_scale": w, "nfe": results[0].nfe,
                   "seconds": float(np.mean([r.seconds for r in results])),
                   "energy_distance": float(np.mean([energy_distance(x, held_out) for x in xs])),
                   "energy_distance_floor": floor}
            row["samples_per_second"] = n / row["seconds"]
            if labelled:
                pred = np.concatenate([data.classify(x.numpy()) for x in xs])
                correct = int((pred == np.tile(y.cpu().numpy(), sets)).sum())
                row.update(share_ci(correct, len(pred)).columns("class_accuracy"))  # Wilson interval
            rows.append(row)
            label = f"{s_spec.name}_{s_spec.steps}" + (f"_w{w:g}" if labelled else "")
            ctx.image(f"samples/{label}", spec.train.steps, scatter_figure(xs[0].numpy(), y, data, row))
            ctx.event(f"{label}: energy distance {row['energy_distance']:.4g} (floor {floor:.4g})"
                      + (f", class accuracy {row['class_accuracy']:.3f}" if labelled else ""))
    ctx.table("samplers", rows)

    reference = [r for r in rows if r["sampler"] == spec.sample.samplers[0].name
                 and r["steps"] == spec.sample.samplers[0].steps]
    headline = next((r for r in reference if r["guidance_scale"] in (None, 1.0)), reference[0])
    summary = {"energy_distance": headline["energy_distance"], "energy_distance_floor": floor,
               "energy_distance_ratio": headline["energy_distance"] / floor, "nfe": headline["nfe"]}
    if labelled:
        summary["guided_accuracy"] = {str(float(r["guidance_scale"])): r["class_accuracy"] for r in reference}
        summary["guided_accuracy_ci"] = {str(float(r["guidance_scale"])): [r["class_accuracy_ci_low"],
                                                                          r["class_accuracy_ci_high"]] for r in reference}
        summary["guided_accuracy_n"] = reference[0]["class_accuracy_n"]
    ctx.summary(**summary)


# --- pictures ------------------------------------------------------------------------------------

def forward_process_figure(schedule, x0: np.ndarray, timesteps: int):
    import torch

    from jobs.diffusion.schedules import q_sample

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
