"""The histogram network in the single-tensor form that MONAI bundle tools and MONAI Label expect."""

from __future__ import annotations

import torch

from monai_ext.networks.nets import HistogramNet

__all__ = ["FinestLevelHistogramNet"]


class FinestLevelHistogramNet(HistogramNet):
    """:py:class:`~monai_ext.networks.nets.HistogramNet` whose ``forward`` returns the finest level as one tensor.

    ``verify_net_in_out``, ``ckpt_export`` and MONAI Label's bundle loader expect ``network_def`` to map a tensor to a
    tensor; ``HistogramNet.forward`` returns one tensor per grid level. This subclass adds no parameter (its state
    dict is the ``HistogramNet`` one, so weights trained by the bundle's workflow load unchanged), returns the
    logits of the finest grid ``(B, num_classes, r, r)`` from ``forward``, and keeps ``dense_forward`` (all levels),
    which is what :py:class:`~monai_ext.inferers.RegionHistogramInferer` uses on whole images.

    Args:
        kwargs: the arguments of :py:class:`~monai_ext.networks.nets.HistogramNet`.

    Example::

        >>> net = FinestLevelHistogramNet(spatial_dims=2, in_channels=1, num_classes=3, patch_size=32)
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        #: index of the finest grid level in ``grid_sizes``
        self.finest_index = max(range(len(self.grid_sizes)), key=lambda i: self.grid_sizes[i])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Patches ``(B, in_channels, p, p)`` to the finest level's logits ``(B, num_classes, r, r)``.

        Raises:
            ValueError: if the spatial size of ``x`` is not ``patch_size``.
        """
        for s in x.shape[2:]:
            if s != self.patch_size:
                raise ValueError(f"expected patches of size {self.patch_size} along every axis, got {x.shape}.")
        y = self._levels(x, 1)[self.finest_index]  # (B, 1, ..., 1, K, r, ...)
        return y.reshape(y.shape[0:1] + y.shape[1 + self.spatial_dims :])
