"""Cutting 3D patches into a grid of tokens and back (TokenUnify's 4×16×16 tokens, raster z, y, x).

Token ``i`` of a patch with ``(nz, ny, nx)`` tokens per axis sits at grid position
``(i // (ny*nx), (i // nx) % ny, i % nx)``: raster order, z slowest. Everything here works on torch
tensors shaped (B, C, Z, Y, X) so the objectives can build masks on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_TOKEN_SHAPE: tuple[int, int, int] = (4, 16, 16)


@dataclass(frozen=True)
class TokenGrid:
    """The token layout of a patch: ``patch_shape`` must be a multiple of ``token_shape`` per axis."""

    patch_shape: tuple[int, int, int]
    token_shape: tuple[int, int, int] = DEFAULT_TOKEN_SHAPE

    def __post_init__(self) -> None:
        if len(self.patch_shape) != 3 or len(self.token_shape) != 3:
            raise ValueError(
                f"patch and token shapes must be (z, y, x), got {self.patch_shape} and {self.token_shape}"
            )
        for p, t, axis in zip(self.patch_shape, self.token_shape, "zyx", strict=False):
            if t < 1 or p < t or p % t:
                raise ValueError(
                    f"patch size {p} along {axis} is not a multiple of the token size {t}; "
                    f"choose a patch shape that is a multiple of the token shape {self.token_shape}"
                )

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Tokens per axis (nz, ny, nx)."""
        return tuple(p // t for p, t in zip(self.patch_shape, self.token_shape, strict=False))

    @property
    def n_tokens(self) -> int:
        nz, ny, nx = self.grid_shape
        return nz * ny * nx

    @property
    def token_size(self) -> int:
        tz, ty, tx = self.token_shape
        return tz * ty * tx

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, Z, Y, X) → (B, N, C·tz·ty·tx) in raster order."""
        b, c = x.shape[:2]
        nz, ny, nx = self.grid_shape
        tz, ty, tx = self.token_shape
        x = x.reshape(b, c, nz, tz, ny, ty, nx, tx)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, nz * ny * nx, c * tz * ty * tx)

    def from_tokens(self, tokens: torch.Tensor, channels: int = 1) -> torch.Tensor:
        """(B, N, C·tz·ty·tx) → (B, C, Z, Y, X); the inverse of :meth:`to_tokens`."""
        b = tokens.shape[0]
        nz, ny, nx = self.grid_shape
        tz, ty, tx = self.token_shape
        x = tokens.reshape(b, nz, ny, nx, channels, tz, ty, tx)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, channels, *self.patch_shape)

    def expand(self, token_mask: torch.Tensor) -> torch.Tensor:
        """A per-token mask (B, N) → a voxel mask (B, 1, Z, Y, X) of the same dtype."""
        b = token_mask.shape[0]
        nz, ny, nx = self.grid_shape
        m = token_mask.reshape(b, 1, nz, ny, nx)
        for axis, rep in zip((2, 3, 4), self.token_shape, strict=False):
            m = m.repeat_interleave(rep, dim=axis)
        return m

    def token_slices(self, index: int) -> tuple[slice, slice, slice]:
        """The (z, y, x) slices of token ``index`` inside the patch."""
        if not 0 <= index < self.n_tokens:
            raise IndexError(f"token {index} outside 0..{self.n_tokens - 1}")
        nz, ny, nx = self.grid_shape
        pos = (index // (ny * nx), (index // nx) % ny, index % nx)
        return tuple(slice(p * t, (p + 1) * t) for p, t in zip(pos, self.token_shape, strict=False))
