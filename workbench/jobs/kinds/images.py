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
The recipe (spec, data, model, training) is the library's jobs.diffusion.image_model, which kinds that
use a trained model share; the EMA weights are kept as the file artifact `model.safetensors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.jobs.diffusion import image_model
from workbench.jobs.diffusion.image_model import ImageModelSpec

# imported by run(); the worker loads them once, up front
PRELOAD = (
    *image_model.PRELOAD,
    "workbench.jobs.metrics.reference",
    "workbench.jobs.metrics.stats",
    "scipy.stats",
)
HEADLINE = ("classifier_fid",)  # the summary keys the runs list shows first

if TYPE_CHECKING:  # torch and the rest are imported where they run: validating a spec stays fast
    from workbench.jobs.context import RunContext
    from workbench.jobs.data.images import ImageData
    from workbench.jobs.diffusion.denoisers import UNetDenoiser

Spec = ImageModelSpec  # the images kind runs exactly the recipe of a trained image model, then evaluates it


def run(ctx: RunContext, spec: Spec) -> None:
    from workbench.jobs.metrics import reference
    from workbench.jobs.metrics.inception import maybe_inception_fid

    inception = maybe_inception_fid(spec.sample, ctx.device)  # first: a missing network fails at once
    data = image_model.load_data(spec)
    judge, _ = reference.load_or_train(ctx.cache_dir("reference"), data, ctx.device, log=ctx.event)
    ctx.summary(reference_accuracy=judge.test_accuracy)
    if inception is not None:
        inception.set_real(spec.sample.inception_real(data))
    model, schedule = image_model.train_model(ctx, spec, data)
    evaluate(ctx, spec, data, model, schedule, judge, inception)


def evaluate(
    ctx: RunContext, spec: Spec, data: ImageData, model: UNetDenoiser, schedule, judge, inception=None
) -> None:
    """Class accuracy and classifier-FID (and Inception FID if asked) of samples per guidance scale,
    with the real-data floor."""
    import torch

    from workbench.jobs.diffusion.samplers import sample_batched
    from workbench.jobs.metrics.stats import Estimate, summary_entry

    device, s = ctx.device, spec.sample
    n, sets = s.n_samples, s.eval_sets
    k = data.num_classes
    conditional = model.num_classes > 0
    y = (torch.arange(n, device=device) % k).repeat(sets)  # R sets of N, each class-balanced
    scales = s.guidance_scales if conditional else [1.0]
    ctx.phase("sampling and scoring", len(scales))
    floor = judge.floor(data.x_train, data.x_test, n, sets, seed=spec.seed)
    rows = []
    for w in scales:
        r = sample_batched(
            model,
            schedule,
            s.sampler.name,
            s.sampler.steps,
            (n * sets, *data.shape),
            y if conditional else None,
            w,
            model.null_class if conditional else None,
            seed=spec.seed + 1,
            batch_size=s.batch_size,
            eta=s.sampler.eta,
            device=device,
        )
        quality, _ = judge.quality(r.x, y if conditional else None, data.x_test, sets, inception)
        row = {
            "guidance_scale": w,
            "sampler": s.sampler.name,
            "steps": s.sampler.steps,
            "nfe": r.nfe,
            "seconds": r.seconds,
            "images_per_second": n * sets / r.seconds,
            **quality,
            **floor,
        }
        rows.append(row)
        shown = {k: str(Estimate.from_columns(row, k)) for k in row}
        ctx.event(
            f"w = {w:g}: class accuracy {shown['class_accuracy'] if conditional else '-'}, "
            f"classifier-FID {shown['classifier_fid']} (real: {shown['classifier_fid_floor']}), "
            f"classifier-KID {shown['classifier_kid']} (real: {shown['classifier_kid_floor']}); "
            f"{r.seconds:.1f} s"
        )
        ctx.progress(len(rows), len(scales))
    ctx.table("guidance", rows)
    headline = next((r for r in rows if r["guidance_scale"] == 1.0), rows[0])
    summary = {
        "classifier_fid_scale": headline["guidance_scale"],
        "classifier_fid_samples": n,
        "nfe": headline["nfe"],
    }
    for key in ("classifier_fid", "classifier_fid_floor", "classifier_kid", "classifier_kid_floor"):
        summary.update(summary_entry(headline, key))
    if inception is not None:
        summary.update(summary_entry(headline, "inception_fid"))
    if conditional:
        summary["guided_accuracy"] = {str(float(r["guidance_scale"])): r["class_accuracy"] for r in rows}
        summary["guided_accuracy_ci"] = {
            str(float(r["guidance_scale"])): [r["class_accuracy_ci_low"], r["class_accuracy_ci_high"]]
            for r in rows
        }
        summary["guided_accuracy_n"] = rows[0]["class_accuracy_n"]
    ctx.summary(**summary)
