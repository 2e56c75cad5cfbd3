"""Diffusion features for probes (jobs/diffusion/features.py), on a small real diffusers UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.jobs.diffusion.denoisers import UNetDenoiser
from workbench.jobs.diffusion.features import FeatureCache, block_names, cached_extract, extract
from workbench.jobs.diffusion.schedules import make_schedule


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNetDenoiser((1, 8, 8), (16, 32), (False, True), num_classes=10).eval()
    with torch.no_grad():  # a class embedding that matters, as a trained model's does
        model.unet.class_embedding.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_blocks_are_named_in_the_order_the_unet_runs_them(unet):
    assert block_names(unet) == ["down0", "down1", "mid", "up0", "up1"]


def test_a_sweep_costs_one_forward_pass_per_timestep_whatever_the_blocks(unet, images):
    """The issue's budget: T timesteps x B blocks over N images costs T passes, not T x B."""
    schedule = make_schedule("linear", 100, clip_sample=True)
    passes = []
    handle = unet.unet.register_forward_hook(lambda *_: passes.append(1))
    try:
        feats = extract(unet, schedule, images, [5, 50, 99], block_names(unet), batch_size=16)
    finally:
        handle.remove()
    assert len(passes) == 3 and len(feats) == 3 * 5
    widths = {b: feats[(5, b)].shape for b in block_names(unet)}
    assert widths == {"down0": (10, 16), "down1": (10, 32), "mid": (10, 32), "up0": (10, 32), "up1": (10, 16)}


def test_features_use_the_null_class_and_do_not_depend_on_the_batch(unet, images):
    """Label-blind: a conditional model is run at its null class, so what a dataset says an image is
    cannot reach its features; the seeded noise is the same in any batching."""
    schedule = make_schedule("linear", 100, clip_sample=True)
    one = extract(unet, schedule, images, [50], ["mid"], batch_size=3)[(50, "mid")]
    other = extract(unet, schedule, images, [50], ["mid"], batch_size=10)[(50, "mid")]
    np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-5)

    told = []  # the class labels the UNet was given
    handle = unet.unet.register_forward_pre_hook(
        lambda _m, _args, kwargs: told.append(kwargs["class_labels"]), with_kwargs=True
    )
    try:
        extract(unet, schedule, images, [50], ["mid"])
    finally:
        handle.remove()
    assert len(told) == 1 and told[0].tolist() == [unet.null_class] * 10

    # and the class matters to this model (so running at the null class was a choice that counts)
    t = torch.full((10,), 50)
    x_t = schedule.add_noise(images, torch.randn(images.shape), t)
    with torch.no_grad():
        assert not torch.allclose(unet(x_t, t, torch.zeros(10, dtype=torch.long)), unet(x_t, t), atol=1e-3)


def test_grid_pooling_and_noise_draws(unet, images):
    schedule = make_schedule("linear", 100, clip_sample=True)
    grid = extract(unet, schedule, images, [20], ["down0"], pooling="grid2")[(20, "down0")]
    assert grid.shape == (10, 16 * 4)
    one = extract(unet, schedule, images, [20], ["down0"], draws=1)[(20, "down0")]
    three = extract(unet, schedule, images, [20], ["down0"], draws=3)[(20, "down0")]
    assert not np.allclose(one, three)  # averaged over three draws, not the first one thrice
    with pytest.raises(KeyError, match="down0, down1, mid, up0, up1"):
        extract(unet, schedule, images, [20], ["down7"])
    with pytest.raises(ValueError, match="grid<k>"):
        extract(unet, schedule, images, [20], ["mid"], pooling="max")


def test_the_cache_runs_only_the_images_it_lacks_and_recomputes_a_torn_file(unet, images, tmp_path):
    """Features of an image are the same whichever images share its call, so a cache can grow: a second
    call runs only the new images, a new block reruns them all, an unreadable file is computed again."""
    schedule = make_schedule("linear", 100, clip_sample=True)
    ran = []  # images through the UNet, per call
    handle = unet.unet.register_forward_hook(lambda _m, args, _out: ran.append(len(args[0])))

    def sweep(ids, blocks, timesteps=(5, 50)):
        ran.clear()
        feats, passes = cached_extract(
            cache, unet, schedule, images[ids], ids, list(timesteps), blocks, batch_size=4
        )
        assert passes == sum(ran)
        return feats, sum(ran)

    cache = FeatureCache(tmp_path, model="m", images="i")
    try:
        assert sweep(np.arange(6), ["mid", "up0"])[1] == 6 * 2
        feats, n = sweep(np.arange(10), ["mid"])
        assert n == 4 * 2  # images 6-9 only
        assert sweep(np.arange(10), ["mid"])[1] == 0
        assert sweep(np.arange(10), ["down0"], [5])[1] == 10  # a block nobody asked for yet
        (cache.dir / "t5-mid.npz").write_bytes(b"torn")
        assert sweep(np.arange(10), ["mid"])[1] == 10  # t=5 again, t=50 from the file
    finally:
        handle.remove()
    fresh = extract(unet, schedule, images, [5, 50], ["mid"], ids=np.arange(10))
    for key in fresh:
        np.testing.assert_allclose(feats[key], fresh[key], rtol=1e-5, atol=1e-6)
    assert len(list(cache.dir.glob("*.tmp"))) == 0
