"""The Penn-Fudan pedestrian dataset as a short subclass of detkit's InstanceMaskDataset."""

from __future__ import annotations

import os
from pathlib import Path

from detkit.data import InstanceMaskDataset


class PennFudanDataset(InstanceMaskDataset):
    """Penn-Fudan pedestrians in the official layout.

    ``root/PNGImages/<name>.png`` with its instance mask ``root/PedMasks/<name>_mask.png``.
    Each image is paired with the mask of the same name (not by sorting two folders
    independently, which silently mispairs them when one file is missing). Every instance
    is a pedestrian: label 1.

    Args:
        root: the dataset folder (the one holding ``PNGImages`` and ``PedMasks``).
        transforms: optional paired transform ``transforms(image, target)``.
    """

    def __init__(self, root: str | os.PathLike, transforms=None) -> None:
        root = Path(root)
        images = sorted((root / "PNGImages").glob("*.png"))
        if not images:
            raise FileNotFoundError(
                f"no PNG images under '{root / 'PNGImages'}': is '{root}' the Penn-Fudan folder "
                "(the one that holds PNGImages/ and PedMasks/)?"
            )
        samples = [(path, root / "PedMasks" / f"{path.stem}_mask.png") for path in images]
        super().__init__(samples, transforms=transforms)
