"""Inception FID (the real one), offered next to classifier-FID where the Inception weights exist.

torchmetrics' FrechetInceptionDistance with torch-fidelity's port of the TF Inception v3 (2048-d pool
features, images resized to 299x299), so figures compare with published FIDs when the sample count
and the reference set match theirs. Optional: `pip install 'workbench[fid]'`; the weights download once
into torch's hub cache, or come from a local file (`inception_weights`) on an offline machine.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class InceptionFID:
    """FID of sample sets against one real set (its features are computed once, by set_real).

    The network loads at construction, so a run that asks for it fails before it trains, not after.
    """

    def __init__(
        self,
        device: str | torch.device,
        weights: str | None = None,
        feature: int | nn.Module = 2048,
        batch_size: int = 200,
    ):
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError:
            raise RuntimeError(
                "inception_fid needs torchmetrics and torch-fidelity: pip install 'workbench[fid]'"
            ) from None
        if isinstance(feature, int) and importlib.util.find_spec("torch_fidelity") is None:
            raise RuntimeError(
                "inception_fid needs torch-fidelity (the Inception network): pip install 'workbench[fid]'"
            )
        try:
            metric = FrechetInceptionDistance(
                feature=feature,
                normalize=True,
                reset_real_features=False,
                feature_extractor_weights_path=weights,
            )
        except Exception as e:  # noqa: BLE001 - a failed download, a corrupt file
            where = f"{torch.hub.get_dir()}/checkpoints/{WEIGHTS_FILE}"
            raise RuntimeError(
                f"inception_fid: cannot load the Inception weights ({type(e).__name__}: {e}). "
                f"They download once into {where}; offline, put that file there or give its "
                "path as inception_weights"
            ) from None
        self.metric, self.device, self.batch_size = metric.to(device), device, batch_size

    def set_real(self, real: torch.Tensor) -> InceptionFID:
        """The reference set, once: reset() between sample sets keeps its features."""
        self._add(real, real=True)
        return self

    def __call__(self, fake: torch.Tensor) -> float:
        self.metric.reset()  # drops the samples' features, keeps the real set's
        self._add(fake, real=False)
        return float(self.metric.compute())

    @torch.no_grad()
    def _add(self, x: torch.Tensor, real: bool) -> None:
        """Images in [-1, 1], NCHW, 1 or 3 channels -> [0, 1] RGB, in chunks."""
        for chunk in x.split(self.batch_size):
            chunk = ((chunk.float().clamp(-1, 1) + 1) / 2).to(self.device)
            if chunk.shape[1] == 1:
                chunk = chunk.expand(-1, 3, -1, -1)
            self.metric.update(chunk, real=real)


def maybe_inception_fid(options, device) -> InceptionFID | None:
    """The metric when the spec's InceptionOptions ask for it."""
    return InceptionFID(device, options.inception_weights) if options.inception_fid else None
