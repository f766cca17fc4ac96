"""A set of 3D Gaussians, batched or not, as one small dataclass.

Fields share leading dimensions ``[..., N]`` (batch dims, then the Gaussian index) and carry
their own trailing attribute dimensions. Indexing, concatenation and rigid transforms act on
all fields together so that a per-Gaussian attribute can never fall out of step with the
others.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from model.cameras import matrix_to_quat, quat_multiply, transform_points


@dataclass
class Gaussians:
    """3D Gaussians.

    Attributes:
        means: ``[..., N, 3]`` centres.
        quats: ``[..., N, 4]`` rotations, wxyz. Need not be normalised; the renderer normalises.
        scales: ``[..., N, 3]`` standard deviations along the local axes (linear, not log).
        opacities: ``[..., N]`` in [0, 1].
        colors: ``[..., N, 3]`` RGB in [0, 1].
        features: optional ``[..., N, D]`` extra attributes the renderer composites like colour
            (for example each Gaussian's source pixel coordinate).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor
    features: Tensor | None = None

    def __post_init__(self) -> None:
        lead = self.opacities.shape
        expected = {"means": 3, "quats": 4, "scales": 3, "colors": 3}
        for name, width in expected.items():
            value = getattr(self, name)
            if value.shape != (*lead, width):
                raise ValueError(
                    f"Gaussians.{name} has shape {tuple(value.shape)}, expected {(*lead, width)}"
                )
        if self.features is not None and self.features.shape[:-1] != lead:
            raise ValueError(
                f"Gaussians.features has shape {tuple(self.features.shape)}, expected {(*lead, 'D')}"
            )

    def _tensors(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _map(self, fn) -> Gaussians:
        return Gaussians(**{k: None if v is None else fn(v) for k, v in self._tensors().items()})

    @property
    def count(self) -> int:
        """Number of Gaussians per batch element."""
        return self.opacities.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.opacities.shape[:-1]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index) -> Gaussians:
        """Index the leading ``[..., N]`` dims, exactly as on a tensor of that shape."""
        return self._map(lambda t: t[index])

    def to(self, *args, **kwargs) -> Gaussians:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(Tensor.detach)

    def reshape_batch(self, *shape: int) -> Gaussians:
        """Same Gaussians with the batch dims reshaped (the Gaussian dim is kept)."""
        n = self.count
        return self._map(lambda t: t.reshape(*shape, n, *t.shape[len(self.batch_shape) + 1 :]))

    @staticmethod
    def cat(items: list[Gaussians], dim: int = -1) -> Gaussians:
        """Concatenate along a leading dim (default: the Gaussian dim, making a union of sets)."""
        if not items:
            raise ValueError("Gaussians.cat needs at least one set")
        has_features = {g.features is not None for g in items}
        if len(has_features) > 1:
            raise ValueError("Gaussians.cat: either all sets carry features or none does")
        lead_ndim = items[0].opacities.ndim
        axis = dim if dim >= 0 else lead_ndim + dim  # counted on the leading dims, not trailing ones
        merged = {}
        for name in items[0]._tensors():
            parts = [getattr(g, name) for g in items]
            merged[name] = None if parts[0] is None else torch.cat(parts, dim=axis)
        return Gaussians(**merged)

    def transform(self, T: Tensor) -> Gaussians:
        """Apply rigid transforms ``T`` ``[..., 4, 4]`` (batch dims broadcast with the set's)."""
        means = transform_points(T, self.means)
        q_T = matrix_to_quat(T[..., :3, :3])[..., None, :]
        quats = quat_multiply(q_T.to(self.quats.dtype), self.quats)
        return replace(self, means=means, quats=quats)
