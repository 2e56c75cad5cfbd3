"""images: DDPM with classifier-free guidance on image data (the `ddpm` method, on images).

Method, top to bottom:
1. Data: digits (scikit-learn's real 8x8 digits, embedded), MNIST, Fashion-MNIST, CIFAR-10 (torchvision
   or a local .npz), or an image folder; pixels scaled to [-1, 1].
2. Model: diffusers UNet2DModel, class-conditional through its class embedding with one extra null
   class; labels are dropped to it with probability train.label_dropout (model.conditional: false
   trains an unconditional model).
3. Training: the shared loop in jobs.diffusion.train (AdamW, warm-up + cosine, clipping, EMA, bf16
   and channels_last on GPU, checkpoint/resume), with sample grids per guidance scale every
   sample.every steps, drawn with the EMA weights.
4. Evaluation by a reference classifier the workbench trains once per dataset and caches in the
   store, over R = sample.eval_sets sets of N = sample.n_samples samples per guidance scale: class
   accuracy of guided samples (Wilson interval over all R * N), classifier-FID and classifier-KID
   (distances between its features of samples and of test images; not Inception FID, comparable only
   within the workbench) as mean and t-interval over the R sets, next to their floor: the same
   distances for R sets of N real training images.
The EMA weights are kept as the file artifact `model.safetensors`: the sampling kind loads them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from jobs.diffusion.config import ImageDatasetName, InceptionOptions, SamplerSpec, Strict, TrainSpec
from jobs.spec import BaseSpec, ExistingPath

# imported by run(); the worker loads them once, up front
PRELOAD = (
    "torch", "torchvision", "safetensors.torch", "jobs.data.images", "jobs.diffusion.denoisers",
    "jobs.diffusion.samplers", "jobs.diffusion.schedules", "jobs.diffusion.train", "jobs.metrics.reference",
    "jobs.metrics.stats", "scipy.stats")

if TYPE_CHECKING:  # torch and the rest are imported where they run: validating a spec stays fast
    import numpy as np
    import torch

    from jobs.context import RunContext
    from jobs.data.images import ImageData
    from jobs.diffusion.denoisers import UNetDenoiser

NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
MODEL_FILE = "model.safetensors"


class DataSpec(Strict):
    name: ImageDatasetName = "digits"
    path: ExistingPath | None = Field(None, description="a .npz (x_train/y_train/x_test/y_test), or the imagefolder "
                                                       "root; relative to the spec file")
    image_size: int | None = Field(None, ge=4, le=512, description="resize to this side (digits: 16 upsamples)")
    n_train: int | None = Field(None, ge=1, le=10_000_000, description="use only the first n training images")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="imagefolder: share held out as test images")
    hflip: bool = Field(False, description="random horizontal flips in training (natural images, not digits)")


class UNetSpec(Strict):
    channels: list[int] = Field([32, 64], min_length=1, max_length=6, description="channels per resolution level")
    attention: list[bool] = Field([False, True], min_length=1, max_length=6,
                                  description="self-attention at each level (same length as channels)")
    layers_per_block: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    norm_groups: int = Field(8, ge=1, le=64)
    attention_head_dim: int = Field(8, ge=1, le=512)
    conditional: bool = Field(True, description="class-conditional with a null class (CFG); false: unconditional")

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention has {len(self.attention)} entries, channels {len(self.channels)}: "
                             "give one per level")
        if bad := [c for c in self.channels if c % self.norm_groups]:
            raise ValueError(f"channels {bad} are not multiples of norm_groups ({self.norm_groups})")
        return self


class EvalSpec(Strict, InceptionOptions):
    sampler: SamplerSpec = SamplerSpec(name="ddim", steps=20)
    guidance_scales: list[float] = Field([0.0, 1.0, 3.0], min_length=1, max_length=32)
    n_samples: int = Field(200, ge=10, le=1_000_000, description="N: samples per evaluation set (FID depends on N: "
                                                                 "compare runs at the same N, next to the floor)")
    eval_sets: int = Field(5, ge=2, le=100, description="R: sample sets per guidance scale (and real floor sets) "
                                                        "behind each figure's interval")
    batch_size: int = Field(500, ge=1, le=100_000)
    every: int = Field(0, ge=0, le=10_000_000, description="sample grids every so many training steps (0: at the end)")
    grid_columns: int = Field(8, ge=1, le=64, description="samples per class in a grid")


class Spec(BaseSpec):
    kind: Literal["images"] = "images"
    data: DataSpec = DataSpec()
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = Field(1000, ge=2, le=10_000)
    model: UNetSpec = UNetSpec()
    train: TrainSpec = TrainSpec()
    sample: EvalSpec = EvalSpec()

    PRESETS = {
        # digits at 8x8 with a 0.7M-parameter UNet: about half a minute on 2 CPU cores.
        "smoke": {"train": {"steps": 150, "batch_size": 128, "lr": 2e-3, "warmup_steps": 20, "ema_decay": 0.95,
                            "checkpoint_every": 50, "log_every": 10}},
        # MNIST 28x28, a 16M-parameter UNet: one GPU.
        "paper": {"data": {"name": "mnist"},
                  "model": {"channels": [64, 128, 256], "attention": [False, True, True], "layers_per_block": 2,
                            "dropout": 0.1, "norm_groups": 32, "attention_head_dim": 32},
                  "train": {"steps": 30_000, "batch_size": 256, "lr": 2e-4, "warmup_steps": 500,
                            "ema_decay": 0.9995, "checkpoint_every": 2000, "log_every": 50},
                  "sample": {"sampler": {"name": "ddpm", "steps": 1000}, "n_samples": 2000, "eval_sets": 5,
                             "every": 5000, "batch_size": 2500}},
    }
    # `preset: paper` with data.name: cifar10 gets CIFAR-10 sizes instead: the DDPM paper's 32x32 UNet
    # layout (attention at 16x16), flips, and a longer run; evaluation as for MNIST.
    PAPER_CIFAR10: ClassVar[dict] = {"data": {"name": "cifar10", "hflip": True},
                     "model": {"channels": [128, 256, 256, 256], "attention": [False, True, False, False],
                               "layers_per_block": 2, "dropout": 0.1, "norm_groups": 32, "attention_head_dim": 64},
                     "train": {"steps": 100_000, "batch_size": 128, "lr": 2e-4, "warmup_steps": 1000,
                               "ema_decay": 0.9999, "checkpoint_every": 5000, "log_every": 50},
                     "sample": {"sampler": {"name": "ddpm", "steps": 1000}, "n_samples": 2000, "eval_sets": 5,
                                "every": 10_000, "batch_size": 1000}}

    @classmethod
    def preset_fields(cls, raw):
        data = raw.get("data")
        if raw.get("preset") == "paper" and isinstance(data, dict) and data.get("name") == "cifar10":
            return cls.PAPER_CIFAR10
        return super().preset_fields(raw)

    @model_validator(mode="after")
    def _fits_the_unet(self):
        size = self.data.image_size or NATIVE_SIZE.get(self.data.name)
        factor = 2 ** (len(self.model.channels) - 1)
        if size and size % factor:
            raise ValueError(f"{self.data.name} images are {size}x{size}, which {len(self.model.channels)} UNet "
                             f"levels cannot halve {len(self.model.channels) - 1} times; set data.image_size to "
                             f"a multiple of {factor} or use fewer model.channels")
        return self


def build_model(spec: Spec, data: ImageData) -> UNetDenoiser:
    from jobs.diffusion.denoisers import UNetDenoiser

    m = spec.model
    return UNetDenoiser(data.shape, tuple(m.channels), tuple(m.attention), m.layers_per_block, m.dropout,
                        data.num_classes if m.conditional else 0, m.norm_groups, m.attention_head_dim)


def load_data(spec: Spec) -> ImageData:
    from jobs.data.images import load_images

    d = spec.data
    return load_images(d.name, d.path, d.image_size, d.n_train, d.test_fraction, spec.seed)


def run(ctx: RunContext, spec: Spec) -> None:
    from jobs.metrics import reference
    from jobs.metrics.inception import maybe_inception_fid

    inception = maybe_inception_fid(spec.sample, ctx.device)  # first: a missing network fails at once
    data = load_data(spec)
    judge, _ = reference.load_or_train(ctx.store.home, data, ctx.device, log=ctx.event)
    ctx.summary(reference_accuracy=judge.test_accuracy)
    if inception is not None:
        inception.set_real(data.x_test)
    model, schedule = train_model(ctx, spec, data)
    evaluate(ctx, spec, data, model, schedule, judge, inception)


def train_model(ctx: RunContext, spec: Spec, data: ImageData) -> tuple[UNetDenoiser, object]:
    """Train (or resume) the UNet; returns the EMA model and the schedule, and saves the EMA weights."""
    import torch

    from jobs.diffusion.schedules import make_schedule
    from jobs.diffusion.train import TrainConfig, train

    device = ctx.device
    torch.manual_seed(spec.seed)
    schedule = make_schedule(spec.schedule, spec.timesteps, clip_sample=True)
    model = build_model(spec, data).to(device)
    conditional = model.num_classes > 0
    ctx.event(f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test images of {data.shape}, "
              f"{data.num_classes} classes; UNet {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
              f"parameters on {device}")
    ctx.image("forward_process", None, forward_process_strip(schedule, data))

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)

    def batches(g: torch.Generator):
        idx = torch.randint(0, len(x_train), (spec.train.batch_size,), device=device, generator=g)
        x = x_train[idx]
        if spec.data.hflip:
            flip = torch.rand(len(x), device=device, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, (y_train[idx] if conditional else None)

    def grids(step: int, ema_model) -> None:
        for w in (spec.sample.guidance_scales if conditional else [1.0]):
            ctx.image(f"samples/w{w:g}", step, sample_grid(ema_model, schedule, spec, data, w, device))

    cfg = TrainConfig(**spec.train.model_dump(), sample_every=spec.sample.every or spec.train.steps)
    gen = torch.Generator(device).manual_seed(spec.seed)
    ema_model = train(ctx, model, schedule, batches, cfg, gen, model.null_class if conditional else None, grids)
    save_model(ctx, ema_model, spec)
    return ema_model, schedule


def evaluate(ctx: RunContext, spec: Spec, data: ImageData, model: UNetDenoiser, schedule, judge,
             inception=None) -> None:
    """Class accuracy and classifier-FID (and Inception FID if asked) of samples per guidance scale,
    with the real-data floor."""
    import torch

    from jobs.diffusion.samplers import sample_batched
    from jobs.metrics.stats import summary_entry
    from store.export import readable

    device, s = ctx.device, spec.sample
    n, sets = s.n_samples, s.eval_sets
    k = data.num_classes
    conditional = model.num_classes > 0
    y = (torch.arange(n, device=device) % k).repeat(sets)  # R sets of N, each class-balanced
    floor = judge.floor(data.x_train, data.x_test, n, sets, seed=spec.seed)
    rows = []
    for w in (s.guidance_scales if conditional else [1.0]):
        r = sample_batched(model, schedule, s.sampler.name, s.sampler.steps, (n * sets, *data.shape),
                           y if conditional else None, w, model.null_class if conditional else None,
                           seed=spec.seed + 1, batch_size=s.batch_size, eta=s.sampler.eta, device=device)
        quality, _ = judge.quality(r.x, y if conditional else None, data.x_test, sets, inception)
        row = {"guidance_scale": w, "sampler": s.sampler.name, "steps": s.sampler.steps, "nfe": r.nfe,
               "seconds": r.seconds, "images_per_second": n * sets / r.seconds, **quality, **floor}
        rows.append(row)
        shown = readable(row)
        ctx.event(f"w = {w:g}: class accuracy {shown['class_accuracy'] if conditional else '-'}, "
                  f"classifier-FID {shown['classifier_fid']} (real: {shown['classifier_fid_floor']}), "
                  f"classifier-KID {shown['classifier_kid']} (real: {shown['classifier_kid_floor']}); "
                  f"{r.seconds:.1f} s")
    ctx.table("guidance", rows)
    headline = next((r for r in rows if r["guidance_scale"] == 1.0), rows[0])
    summary = {"classifier_fid_scale": headline["guidance_scale"], "classifier_fid_samples": n,
               "nfe": headline["nfe"]}
    for key in ("classifier_fid", "classifier_fid_floor", "classifier_kid", "classifier_kid_floor"):
        summary.update(summary_entry(headline, key))
    if inception is not None:
        summary["inception_fid"] = headline["inception_fid"]
    if conditional:
        summary["guided_accuracy"] = {str(float(r["guidance_scale"])): r["class_accuracy"] for r in rows}
        summary["guided_accuracy_ci"] = {str(float(r["guidance_scale"])): [r["class_accuracy_ci_low"],
                                                                          r["class_accuracy_ci_high"]] for r in rows}
        summary["guided_accuracy_n"] = rows[0]["class_accuracy_n"]
    ctx.summary(**summary)


# --- the trained model as a file (for the sampling kind) --------------------------------------------

def save_model(ctx: RunContext, model: UNetDenoiser, spec: Spec) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    ctx.file(MODEL_FILE, save(tensors, metadata={"spec": json.dumps(spec.model_dump(mode="json"))}),
             description="EMA weights of the UNet")


def load_model(path, spec: Spec, data: ImageData, device) -> UNetDenoiser:
    from safetensors.torch import load_file

    model = build_model(spec, data)
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


# --- pictures ---------------------------------------------------------------------------------------

def to_pixels(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 grid rows; the caller arranges them."""
    import torch

    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if scale > 1:
        x = x.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return x.numpy()


def grid_image(x: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """A rows x cols grid (HxWxC uint8) with 1-pixel gaps; small images are scaled up to stay legible."""
    import torch
    from torchvision.utils import make_grid

    scale = max(1, 32 // x.shape[-1])
    pixels = torch.from_numpy(to_pixels(x[:rows * cols], scale))
    grid = make_grid(pixels, nrow=cols, padding=1, pad_value=255)
    return grid.permute(1, 2, 0).numpy()


def sample_grid(model, schedule, spec: Spec, data: ImageData, w: float, device) -> np.ndarray:
    """One row per class (up to 10), grid_columns samples each, with the evaluation sampler and fixed seeds."""
    import torch

    from jobs.diffusion.samplers import sample_batched

    conditional = model.num_classes > 0
    k = min(data.num_classes, 10) if conditional else 4
    cols = spec.sample.grid_columns
    y = torch.arange(k, device=device).repeat_interleave(cols) if conditional else None
    s = spec.sample.sampler
    r = sample_batched(model, schedule, s.name, s.steps, (k * cols, *data.shape), y, w,
                       model.null_class if conditional else None, seed=1234, batch_size=spec.sample.batch_size,
                       eta=s.eta, device=device)
    return grid_image(r.x, k, cols)


def forward_process_strip(schedule, data: ImageData) -> np.ndarray:
    """Rows: a test image of each of (up to) 6 classes; columns: x_t at growing t."""
    import torch

    from jobs.diffusion.schedules import q_sample

    T = schedule.config.num_train_timesteps
    ts = [0, T // 20, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
    picks = [int(torch.nonzero(data.y_test == c)[0]) for c in range(min(6, data.num_classes))
             if (data.y_test == c).any()] or [0]
    x0 = data.x_test[picks]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    cells = torch.stack([q_sample(schedule, x0, torch.full((len(x0),), t), noise) for t in ts], 1)
    return grid_image(cells.flatten(0, 1), len(x0), len(ts))
