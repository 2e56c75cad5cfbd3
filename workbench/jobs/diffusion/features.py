"""A trained denoiser's features: a UNet block's activations at noise level t, pooled (for probes).

x_0 is noised to x_t with a draw seeded by (seed, t, draw, the image's id), so an image's features do
not depend on which other images share its batch, run or cache file. The denoiser runs once per t (a
class-conditional model at its null class) and forward hooks keep the output of every block asked for,
so a sweep over T timesteps and B blocks costs T forward passes over the images, not T x B. Nothing
here takes a label: an image's features cannot depend on what the dataset says it is.

`FeatureCache` keeps them on disk per (model weights, images, pooling, seed, draws) and t and block,
growing as later runs ask for more images.

Blocks are named in the order the UNet runs them: `down0` ... `down{n-1}`, `mid`, `up0` ... `up{n-1}`.
Pooling: `avg` (global average: one number per channel) or `grid{k}` (average over a k x k grid:
k*k numbers per channel, some of where things are).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from workbench.jobs.diffusion.schedules import q_sample


def block_names(model) -> list[str]:
    """The blocks of a UNetDenoiser, in the order they run."""
    unet = model.unet
    return [
        *(f"down{i}" for i in range(len(unet.down_blocks))),
        "mid",
        *(f"up{i}" for i in range(len(unet.up_blocks))),
    ]


def block(model, name: str) -> torch.nn.Module:
    if name == "mid":
        return model.unet.mid_block
    match = re.fullmatch(r"(down|up)(\d+)", name)
    blocks = model.unet.down_blocks if match and match[1] == "down" else model.unet.up_blocks
    if not match or int(match[2]) >= len(blocks):
        raise KeyError(f"no block {name!r}; this model has {', '.join(block_names(model))}")
    return blocks[int(match[2])]


def pool(h: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, C, H, W) -> (N, D) by `avg` or `grid{k}`."""
    if pooling == "avg":
        return h.mean(dim=(2, 3))
    match = re.fullmatch(r"grid(\d+)", pooling)
    if not match or int(match[1]) < 1:
        raise ValueError(f"pooling {pooling!r}: use avg or grid<k> (grid2, grid4, ...)")
    return torch.nn.functional.adaptive_avg_pool2d(h, int(match[1])).flatten(1)


@torch.no_grad()
def extract(
    model,
    schedule,
    images: torch.Tensor,
    timesteps: list[int],
    blocks: list[str],
    pooling: str = "avg",
    seed: int = 0,
    draws: int = 1,
    batch_size: int = 256,
    ids: np.ndarray | None = None,
) -> dict[tuple[int, str], np.ndarray]:
    """{(t, block): float32 array (N, D)} for `images` (N, C, H, W) in the model's range [-1, 1].

    `ids` (N distinct integers; default 0..N-1) name the images: image i's noise at (t, draw) is seeded
    by (seed, t, draw, ids[i]), the same for every block, batch size and company. With draws > 1 the
    features are averaged over the draws. Cost: len(timesteps) * draws forward passes over the images,
    whatever the number of blocks.
    """
    device = next(model.parameters()).device
    modules = {name: block(model, name) for name in blocks}
    caught: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            caught[name] = output[0] if isinstance(output, tuple) else output  # down blocks add their skips

        return hook

    ids = np.arange(len(images)) if ids is None else np.asarray(ids)
    if ids.shape != (len(images),):
        raise ValueError(f"{len(ids)} ids for {len(images)} images")
    handles = [m.register_forward_hook(keep(name)) for name, m in modules.items()]
    try:
        features: dict[tuple[int, str], np.ndarray] = {}
        for t in timesteps:
            sums: dict[str, list[torch.Tensor]] = {name: [] for name in blocks}
            for draw in range(draws):
                noise = _noise(images.shape, ids, seed, t, draw)
                for start in range(0, len(images), batch_size):
                    x0 = images[start : start + batch_size].to(device)
                    tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
                    model(q_sample(schedule, x0, tt, noise[start : start + batch_size].to(device)), tt)
                    for name in blocks:
                        pooled = pool(caught[name].float(), pooling).cpu()
                        if draw == 0:
                            sums[name].append(pooled)
                        else:
                            sums[name][start // batch_size] += pooled
            for name in blocks:
                features[(t, name)] = (torch.cat(sums[name]) / draws).numpy()
        return features
    finally:
        for h in handles:
            h.remove()


def _noise(shape, ids: np.ndarray, seed: int, t: int, draw: int) -> torch.Tensor:
    g = torch.Generator()
    out = torch.empty(shape)
    for i, image_id in enumerate(ids.tolist()):
        state = np.random.SeedSequence([seed, t, draw, image_id]).generate_state(2, np.uint64)[0]
        out[i] = torch.randn(shape[1:], generator=g.manual_seed(int(state)))
    return out


class FeatureCache:
    """Features per (t, block), kept under `root` (None: in memory, for this process only) in one folder
    per `key` (model weights, images, pooling, seed, draws), one file per (t, block) holding the ids it has
    and their rows, sorted by id. Files are replaced whole (written aside, then renamed), so a crash leaves
    the old file or the new one, never half of one."""

    def __init__(self, root: Path | None, **key: object):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / digest if root is not None else None
        self.key = key
        self._memory: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    def _path(self, t: int, block: str) -> Path:
        return self.dir / f"t{t}-{block}.npz"

    def get(self, t: int, block: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, features) cached for (t, block); empty when none are."""
        empty = np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        if self.dir is None:
            return self._memory.get((t, block), empty)
        try:
            with np.load(self._path(t, block)) as f:
                return f["ids"], f["features"]
        except (OSError, KeyError, ValueError):  # none yet, or unreadable: computed again
            return empty

    def put(self, t: int, block: str, ids: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add rows, merged with the cached ones; returns all of them, as `get` would."""
        old_ids, old = self.get(t, block)
        if len(old_ids):
            ids, features = np.concatenate([old_ids, ids]), np.concatenate([old, features])
        ids, first = np.unique(ids, return_index=True)
        features = features[first]
        if self.dir is None:
            self._memory[(t, block)] = ids, features
            return ids, features
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "key.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.key, indent=1, sort_keys=True))
        path = self._path(t, block)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, features=features)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return ids, features


def cached_extract(
    cache: FeatureCache,
    model,
    schedule,
    images: torch.Tensor,
    ids: np.ndarray,
    timesteps: list[int],
    blocks: list[str],
    pooling: str = "avg",
    seed: int = 0,
    draws: int = 1,
    batch_size: int = 256,
    on_timestep=None,
) -> tuple[dict[tuple[int, str], np.ndarray], int]:
    """`extract` for the images named by `ids` (rows in that order), running the model at each t only on
    the images some block lacks in `cache`, and caching what it computes. Returns (features, the number
    of image forward passes it ran)."""
    ids = np.asarray(ids)
    features, passes = {}, 0
    for t in timesteps:
        have = {b: cache.get(t, b) for b in blocks}
        missing = {b: ~np.isin(ids, have[b][0]) for b in blocks}
        short = [b for b in blocks if missing[b].any()]
        if short:
            need = np.logical_or.reduce([missing[b] for b in short])
            new = extract(
                model,
                schedule,
                images[torch.from_numpy(need)],
                [t],
                short,
                pooling,
                seed,
                draws,
                batch_size,
                ids=ids[need],
            )
            passes += int(need.sum()) * draws
            have.update({b: cache.put(t, b, ids[need], new[(t, b)]) for b in short})
        for b in blocks:
            cached_ids, rows = have[b]
            features[(t, b)] = rows[np.searchsorted(cached_ids, ids)]
        if on_timestep:
            on_timestep(t)
    return features, passes
