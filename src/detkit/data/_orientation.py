"""EXIF orientation applied to decoded pixels (the tag itself is read by ``_image_headers``)."""

from __future__ import annotations

import torch


def inverse_orientation(orientation: int) -> int:
    """The orientation that undoes ``orientation``: 6 and 8 turn a quarter each way, the
    others are their own inverses."""
    return {6: 8, 8: 6}.get(orientation, orientation)


def orient(tensor: torch.Tensor, orientation: int) -> torch.Tensor:
    """``tensor[C, H, W]`` as shown under EXIF ``orientation`` (PIL's ``exif_transpose``)."""
    if orientation == 2:
        return tensor.flip(-1)
    if orientation == 3:
        return tensor.flip(-2, -1)
    if orientation == 4:
        return tensor.flip(-2)
    if orientation == 5:
        return tensor.transpose(-2, -1).contiguous()
    if orientation == 6:
        return torch.rot90(tensor, -1, (-2, -1)).contiguous()
    if orientation == 7:
        return tensor.transpose(-2, -1).flip(-2, -1)
    return torch.rot90(tensor, 1, (-2, -1)).contiguous()
