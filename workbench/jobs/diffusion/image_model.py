"""A trained image model as a building block: its spec, data, UNet, training, file, and where it comes from.

The `images` kind runs this recipe and evaluates the result; kinds that work on a trained model
(`sampling`, and the science kinds after it) take one through `WithImageModel`: `model_run: ID` names a
succeeded images run whose weights to load, `train:` embeds an images spec to train one first, in the
same run and through the same loop. Importing this module stays cheap (pydantic only); torch is imported
inside the functions that run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workbench.jobs.diffusion.config import DataSpec, InceptionOptions, SamplerSpec, Strict, TrainSpec
from workbench.jobs.diffusion.pretrained import PretrainedModel
from workbench.jobs.figures import Grid, grid_image
from workbench.jobs.spec import BaseSpec, RunRef, deep_merge

# what the functions below import; kinds that use them add these to their PRELOAD
PRELOAD = (
    "torch",
    "torchvision",
    "safetensors.torch",
    "workbench.jobs.data.images",
    "workbench.jobs.diffusion.denoisers",
    "workbench.jobs.diffusion.samplers",
    "workbench.jobs.diffusion.schedules",
    "workbench.jobs.diffusion.train",
    "workbench.jobs.figures",
)

if TYPE_CHECKING:
    from workbench.jobs.context import RunContext
    from workbench.jobs.data.images import ImageData
    from workbench.jobs.diffusion.denoisers import UNetDenoiser

NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
MODEL_FILE = "model.safetensors"  # the EMA weights, a file artifact of every images run
IMAGE_KINDS = ("images",)  # kinds whose runs keep MODEL_FILE


class UNetSpec(Strict):
    channels: list[int] = Field(
        [32, 64], min_length=1, max_length=6, description="channels per resolution level"
    )
    attention: list[bool] = Field(
        [False, True],
        min_length=1,
        max_length=6,
        description="self-attention at each level (same length as channels)",
    )
    layers_per_block: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    norm_groups: int = Field(8, ge=1, le=64)
    attention_head_dim: int = Field(8, ge=1, le=512)
    conditional: bool = Field(
        True, description="class-conditional with a null class (CFG); false: unconditional"
    )

    @model_validator(mode="after")
    def _consistent(self):
        if len(self.attention) != len(self.channels):
            raise ValueError(
                f"attention has {len(self.attention)} entries, channels {len(self.channels)}: "
                "give one per level"
            )
        if bad := [c for c in self.channels if c % self.norm_groups]:
            raise ValueError(f"channels {bad} are not multiples of norm_groups ({self.norm_groups})")
        return self


class EvalSpec(Strict, InceptionOptions):
    sampler: SamplerSpec = SamplerSpec(name="ddim", steps=20)
    guidance_scales: list[float] = Field([0.0, 1.0, 3.0], min_length=1, max_length=32)
    n_samples: int = Field(
        200,
        ge=10,
        le=1_000_000,
        description="N: samples per evaluation set (FID depends on N: "
        "compare runs at the same N, next to the floor)",
    )
    eval_sets: int = Field(
        5,
        ge=2,
        le=100,
        description="R: sample sets per guidance scale (and real floor sets) behind each figure's interval",
    )
    batch_size: int = Field(500, ge=1, le=100_000)
    every: int = Field(
        0, ge=0, le=10_000_000, description="sample grids every so many training steps (0: at the end)"
    )
    grid_columns: int = Field(8, ge=1, le=64, description="samples per class in a grid")


class ImageModelSpec(BaseSpec):
    kind: Literal["images"] = "images"
    data: DataSpec = DataSpec()
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = Field(1000, ge=2, le=10_000)
    model: UNetSpec = UNetSpec()
    train: TrainSpec = TrainSpec()
    sample: EvalSpec = EvalSpec()

    PRESETS = {
        # digits at 8x8 with a 0.7M-parameter UNet: about half a minute on 2 CPU cores.
        "smoke": {
            "train": {
                "steps": 150,
                "batch_size": 128,
                "lr": 2e-3,
                "warmup_steps": 20,
                "ema_decay": 0.95,
                "checkpoint_every": 50,
                "log_every": 10,
            }
        },
        # MNIST 28x28, a 16M-parameter UNet: one GPU.
        "paper": {
            "data": {"name": "mnist"},
            "model": {
                "channels": [64, 128, 256],
                "attention": [False, True, True],
                "layers_per_block": 2,
                "dropout": 0.1,
                "norm_groups": 32,
                "attention_head_dim": 32,
            },
            "train": {
                "steps": 30_000,
                "batch_size": 256,
                "lr": 2e-4,
                "warmup_steps": 500,
                "ema_decay": 0.9995,
                "checkpoint_every": 2000,
                "log_every": 50,
            },
            "sample": {
                "sampler": {"name": "ddpm", "steps": 1000},
                "n_samples": 2000,
                "eval_sets": 5,
                "every": 5000,
                "batch_size": 2500,
            },
        },
    }
    # `preset: paper` with data.name: cifar10 gets CIFAR-10 sizes instead: the DDPM paper's 32x32 UNet
    # layout (attention at 16x16), flips, and a longer run; evaluation as for MNIST.
    PAPER_CIFAR10: ClassVar[dict] = {
        "data": {"name": "cifar10", "hflip": True},
        "model": {
            "channels": [128, 256, 256, 256],
            "attention": [False, True, False, False],
            "layers_per_block": 2,
            "dropout": 0.1,
            "norm_groups": 32,
            "attention_head_dim": 64,
        },
        "train": {
            "steps": 100_000,
            "batch_size": 128,
            "lr": 2e-4,
            "warmup_steps": 1000,
            "ema_decay": 0.9999,
            "checkpoint_every": 5000,
            "log_every": 50,
        },
        "sample": {
            "sampler": {"name": "ddpm", "steps": 1000},
            "n_samples": 2000,
            "eval_sets": 5,
            "every": 10_000,
            "batch_size": 1000,
        },
    }

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
            raise ValueError(
                f"{self.data.name} images are {size}x{size}, which {len(self.model.channels)} UNet "
                f"levels cannot halve {len(self.model.channels) - 1} times; set data.image_size to "
                f"a multiple of {factor} or use fewer model.channels"
            )
        return self


class WithImageModel(BaseSpec):
    """The spec of a kind that works on a trained image model: exactly one of `model_run` (a succeeded
    images run), `train` (an images spec trained first, in the same run) and `model` (a published
    diffusers model). `source_model` gives the model."""

    model_run: RunRef | None = Field(
        None,
        description="a succeeded `images` run whose model to use: its id, or {experiment, name} (the newest "
        "succeeded run of that experiment)",
    )
    train: ImageModelSpec | None = Field(
        None, description="or: an `images` spec to train the model in this run"
    )
    model: PretrainedModel | None = Field(
        None,
        description="or: a published diffusers UNet2DModel, {pretrained: OWNER/NAME or a folder, data: ...}",
    )

    @classmethod
    def preset_fields(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """A document that names its model (model_run or model) uses it: the preset's training gives way."""
        fields = super().preset_fields(raw)
        named = raw.get("model_run") is not None or raw.get("model") is not None
        return {k: v for k, v in fields.items() if k != "train"} if named else fields

    @field_validator("train", mode="before")
    @classmethod
    def _train_preset(cls, value):
        """The embedded images spec gets its own preset under its fields, as a top-level one would."""
        if isinstance(value, dict):
            value = deep_merge(ImageModelSpec.preset_fields(value), value)
        return value

    @model_validator(mode="after")
    def _exactly_one_source(self):
        if sum(x is not None for x in (self.model_run, self.train, self.model)) != 1:
            raise ValueError(
                "give exactly one of model_run (a finished images run), train (an images spec) and model "
                "(a published model: {pretrained: OWNER/NAME})"
            )
        return self


@dataclass(frozen=True)
class ImageModel:
    """A trained model ready to sample, with the images it was trained on where they are known."""

    name: str  # the run's name, or the published model's id: how events and tables name it
    data: ImageData | None  # the images it was trained on (None: a published model named without data)
    model: Any  # a denoiser (UNetDenoiser, pretrained's): EMA or published weights, eval mode, on the device
    schedule: Any  # the diffusers scheduler of its training noise schedule (and prediction type)
    run_id: int | None = None  # the images run it came from; None when trained in this run or published
    seed: int = 0  # the seed its data was split with (an image folder's held-out images)
    record: dict | None = None  # a published model: where it came from, its commit and weights' digest

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.model.image_shape)

    @property
    def class_names(self) -> list[str]:
        """The classes it draws, by label ([] when unconditional)."""
        if not self.model.num_classes:
            return []
        if self.data is not None and self.data.num_classes == self.model.num_classes:
            return list(self.data.class_names)
        return [f"class {i}" for i in range(self.model.num_classes)]

    def load_images(self, data: DataSpec | None = None) -> ImageData:
        """`data` (default: the model's own) loaded as the model's data is, checked against its shape."""
        if data is None:
            if self.data is None:
                raise ValueError(f"{self.name}: name the images it was made for (model.data)")
            return self.data
        images = load_images_of(data, self.seed)
        if images.shape != self.shape:
            raise ValueError(f"data: {images.name} images are {images.shape}; the model takes {self.shape}")
        return images


def source_model(ctx: RunContext, spec: WithImageModel) -> ImageModel:
    """The model a WithImageModel spec names: trained now (`train`), published (`model`), or loaded from a
    succeeded images run (`model_run`; UnusableRun when that run is missing, unfinished, of another kind
    or has no weights)."""
    if spec.train is not None:
        data = load_data(spec.train)
        model, schedule = train_model(ctx, spec.train, data)
        return ImageModel(spec.train.name or "this run's model", data, model, schedule, None, spec.train.seed)
    if spec.model is not None:
        source = published_model(ctx, spec.model, spec.seed)
        ctx.summary(pretrained=source.record)  # the commit: `revision: <it>` names this model again
        return source
    return finished_model(ctx, spec.model_run, "model_run")


def finished_model(ctx: RunContext, run_id: RunRef, field: str) -> ImageModel:
    """The model of a succeeded images run (UnusableRun, naming `field`, when it cannot serve)."""
    from workbench.jobs.context import UnusableRun
    from workbench.jobs.diffusion.schedules import make_schedule

    try:
        run = ctx.finished_run(run_id, kinds=IMAGE_KINDS)
        weights = run.artifact(MODEL_FILE)
    except UnusableRun as e:
        raise UnusableRun(f"{field}: {e}") from None
    src = ImageModelSpec.model_validate(run.spec)
    data = load_data(src)
    model = load_model(weights, src, data, ctx.device)
    ctx.event(f"using the model of run {run.id} ({run.name})")
    schedule = make_schedule(src.schedule, src.timesteps, clip_sample=True)
    return ImageModel(src.name or f"run{run.id}", data, model, schedule, run.id, src.seed)


def published_model(ctx: RunContext, ref: PretrainedModel, seed: int, field: str = "model") -> ImageModel:
    """A published diffusers model (see jobs.diffusion.pretrained), with the images its spec names; the
    commit and weights' digest go into the run's events."""
    from workbench.jobs.diffusion import pretrained

    ctx.event(f"{field}: reading {ref}" + ("" if ref.local else " (the Hub's cache first)"))
    loaded = pretrained.load(ref, ctx.device, field)  # a ModelFolderError (a ValueError) says what is wrong
    r = loaded.record
    ctx.event(
        f"{field}: {ref.pretrained}"
        + (
            f" at commit {r['revision']}"
            if r["revision"]
            else f" (weights sha256 {r['weights_sha256'][:16]})"
        )
        + f", {loaded.model.num_classes or 'no'} classes, {r['prediction_type']} prediction, "
        f"{r['beta_schedule']} schedule of {r['timesteps']} steps"
    )
    name = ref.local.name if ref.local else ref.pretrained
    model = ImageModel(name, None, loaded.model, loaded.schedule, None, seed, r)
    if ref.data is None:
        return model
    data = model.load_images(ref.data)
    if model.model.num_classes and data.num_classes > model.model.num_classes:
        raise ValueError(
            f"{field}.data: {data.name} has {data.num_classes} classes; the model draws {model.model.num_classes}"
        )
    return replace(model, data=data)


def weights_digest(model) -> str:
    """Identifies a model by its weights (names and float32 values): the key of caches built from it."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def build_model(spec: ImageModelSpec, data: ImageData) -> UNetDenoiser:
    from workbench.jobs.diffusion.denoisers import UNetDenoiser

    m = spec.model
    return UNetDenoiser(
        data.shape,
        tuple(m.channels),
        tuple(m.attention),
        m.layers_per_block,
        m.dropout,
        data.num_classes if m.conditional else 0,
        m.norm_groups,
        m.attention_head_dim,
    )


def load_data(spec: ImageModelSpec) -> ImageData:
    return load_images_of(spec.data, spec.seed)


def load_images_of(d: DataSpec, seed: int) -> ImageData:
    from workbench.jobs.data.images import load_images

    return load_images(d.name, d.path, d.image_size, d.n_train, d.test_fraction, seed)


def train_model(
    ctx: RunContext, spec: ImageModelSpec, data: ImageData, keep: bool = True
) -> tuple[UNetDenoiser, object]:
    """Train (or resume) the UNet; returns the EMA model and the schedule. keep: the model is the run's
    (its forward-process strip, sample grids and EMA weights file go into the run); False for a model
    that is a step of another kind's run (one generator among many): only its curves and events."""
    import torch

    from workbench.jobs.diffusion.schedules import make_schedule
    from workbench.jobs.diffusion.train import TrainConfig, train

    device = ctx.device
    ctx.phase("training the denoiser", spec.train.steps)
    torch.manual_seed(spec.seed)
    schedule = make_schedule(spec.schedule, spec.timesteps, clip_sample=True)
    model = build_model(spec, data).to(device)
    conditional = model.num_classes > 0
    ctx.event(
        f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test images of {data.shape}, "
        f"{data.num_classes} classes; UNet {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters on {device}"
    )
    if keep:
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
        for w in spec.sample.guidance_scales if conditional else [1.0]:
            ctx.image(f"samples/w{w:g}", step, sample_grid(ema_model, schedule, spec, data, w, device))

    cfg = TrainConfig(**spec.train.model_dump(), sample_every=spec.sample.every or spec.train.steps)
    gen = torch.Generator(device).manual_seed(spec.seed)
    ema_model = train(
        ctx,
        model,
        schedule,
        batches,
        cfg,
        gen,
        model.null_class if conditional else None,
        grids if keep else None,
    )
    if keep:
        save_model(ctx, ema_model, spec)
    return ema_model, schedule


def save_model(ctx: RunContext, model: UNetDenoiser, spec: ImageModelSpec) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    ctx.file(
        MODEL_FILE,
        save(tensors, metadata={"spec": json.dumps(spec.model_dump(mode="json"))}),
        description="EMA weights of the UNet",
    )


def load_model(path, spec: ImageModelSpec, data: ImageData, device) -> UNetDenoiser:
    from safetensors.torch import load_file

    model = build_model(spec, data)
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()


# --- pictures drawn while training ---------------------------------------------------------------


def sample_grid(model, schedule, spec: ImageModelSpec, data: ImageData, w: float, device) -> Grid:
    """One row per class (up to 10), grid_columns samples each, with the evaluation sampler and fixed seeds."""
    import torch

    from workbench.jobs.diffusion.samplers import sample_batched

    conditional = model.num_classes > 0
    k = min(data.num_classes, 10) if conditional else 4
    cols = spec.sample.grid_columns
    y = torch.arange(k, device=device).repeat_interleave(cols) if conditional else None
    s = spec.sample.sampler
    r = sample_batched(
        model,
        schedule,
        s.name,
        s.steps,
        (k * cols, *data.shape),
        y,
        w,
        model.null_class if conditional else None,
        seed=1234,
        batch_size=spec.sample.batch_size,
        eta=s.eta,
        device=device,
    )
    return grid_image(r.x, k, cols)


def forward_process_strip(schedule, data: ImageData) -> Grid:
    """Rows: a test image of each of (up to) 6 classes; columns: x_t at growing t."""
    import torch

    from workbench.jobs.diffusion.schedules import q_sample

    T = schedule.config.num_train_timesteps
    ts = [0, T // 20, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
    picks = [
        int(torch.nonzero(data.y_test == c)[0])
        for c in range(min(6, data.num_classes))
        if (data.y_test == c).any()
    ] or [0]
    x0 = data.x_test[picks]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    cells = torch.stack([q_sample(schedule, x0, torch.full((len(x0),), t), noise) for t in ts], 1)
    return grid_image(cells.flatten(0, 1), len(x0), len(ts))
