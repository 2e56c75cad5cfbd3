"""Spec sections the diffusion kinds share (ddpm, images, sampling); dataset names live in jobs.data.names.

Only pydantic here: specs are validated by the CLI and the TUI, which must not pay torch's import.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.jobs.data.names import ImageDatasetName
from workbench.jobs.spec import ExistingPath

SamplerName = Literal["ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "unipc", "euler"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(Strict):
    steps: int = Field(3000, ge=1, le=10_000_000)
    batch_size: int = Field(512, ge=1, le=65_536)
    lr: float = Field(2e-3, gt=0, le=1.0)
    warmup_steps: int = Field(100, ge=0, le=1_000_000)
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    grad_clip: float = Field(1.0, ge=0, le=1e6)
    ema_decay: float = Field(0.995, ge=0, lt=1.0)
    label_dropout: float = Field(0.1, ge=0, le=1.0, description="probability of training on the null class")
    checkpoint_every: int = Field(500, ge=1, le=10_000_000)
    log_every: int = Field(10, ge=1, le=100_000)
    mixed_precision: bool = Field(
        True, description="bf16 autocast (and channels_last) on CUDA; ignored on CPU"
    )


class SamplerSpec(Strict):
    name: SamplerName
    steps: int = Field(ge=1, le=10_000)
    eta: float = Field(0.0, ge=0, le=1.0, description="DDIM stochasticity")


class InceptionOptions(BaseModel):
    """Real Inception FID next to classifier-FID (optional: pip install 'workbench[fid]')."""

    inception_fid: bool = Field(
        False, description="also report Inception FID against the test images (torchmetrics; slow on CPU)"
    )
    inception_weights: ExistingPath | None = Field(
        None, description="a local weights-inception-2015-12-05 file (offline); default: torch's hub cache"
    )
    inception_reference: Literal["test", "train"] = Field(
        "test",
        description="the real images Inception FID compares with: test, or train (the DDPM and DPM-Solver "
        "papers' protocol: 50 000 samples against the training set)",
    )

    def inception_real(self, data):
        """The real images of `data` (an ImageData) that Inception FID compares with."""
        return data.x_train if self.inception_reference == "train" else data.x_test


def check_guidance(
    classes: int, has_null: bool, w: float, field: str = "guidance_scale", null: str = "model.class_null"
) -> None:
    """Guidance (w other than 1) needs a class-conditional model with an unconditional (null) class:
    ValueError naming `field` (the guidance scale) and `null` (where a published model says it has one)."""
    if w == 1.0:
        return
    if not classes:
        raise ValueError(
            f"{field} {w:g}: the model is unconditional, so there is nothing to guide towards; set {field}: 1"
        )
    if not has_null:
        raise ValueError(
            f"{field} {w:g}: classifier-free guidance needs the model's unconditional (null) class, and this "
            f"model has none (set {null}: true if its last class is that one, or {field}: 1)"
        )


class DataSpec(Strict):
    name: ImageDatasetName = "digits"
    path: ExistingPath | None = Field(
        None,
        description="a .npz (x_train/y_train/x_test/y_test), or the imagefolder "
        "root; relative to the spec file",
    )
    image_size: int | None = Field(
        None, ge=4, le=512, description="resize to this side (digits: 16 upsamples)"
    )
    n_train: int | None = Field(None, ge=1, le=10_000_000, description="use only the first n training images")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="imagefolder: share held out as test images")
    hflip: bool = Field(False, description="random horizontal flips in training (natural images, not digits)")
