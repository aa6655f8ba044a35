"""The Penn-Fudan pedestrian dataset as a short subclass of detkit's InstanceMaskDataset."""

from __future__ import annotations

import os

from detkit.data import InstanceMaskDataset


class PennFudanDataset(InstanceMaskDataset):
    """Penn-Fudan pedestrians in the official layout.

    ``root/PNGImages/<name>.png`` with its instance mask ``root/PedMasks/<name>_mask.png``.
    Each image is paired with the mask of the same name (not by sorting two folders
    independently, which silently mispairs them when one file is missing); an image
    without its mask is an error at construction. Every instance is a pedestrian: label 1.
    Hidden files (such as macOS's ``._<name>.png``) are skipped.

    Construction lists the two folders and opens no file: for 10,000 images it takes about
    as long as the listing itself.

    Args:
        root: the dataset folder (the one holding ``PNGImages`` and ``PedMasks``).
        transforms: optional paired transform ``transforms(image, target)``.
    """

    def __init__(self, root: str | os.PathLike, transforms=None) -> None:
        image_dir = os.path.join(root, "PNGImages")
        mask_dir = os.path.join(root, "PedMasks")
        names = sorted(n for n in _listing(image_dir) if n.endswith(".png") and n[0] != ".")
        if not names:
            raise FileNotFoundError(
                f"no PNG images under '{image_dir}': is '{root}' the Penn-Fudan folder "
                "(the one that holds PNGImages/ and PedMasks/)?"
            )
        # Plain strings, and the listing of PedMasks as the file check: 20,000 Path objects
        # or stat calls would cost several times the listing.
        masks = [f"{name[:-4]}_mask.png" for name in names]
        missing = set(masks).difference(_listing(mask_dir))
        if missing:
            shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
            raise FileNotFoundError(
                f"{len(missing)} image(s) under '{image_dir}' have no mask under '{mask_dir}': "
                f"{shown}"
            )
        image_dir, mask_dir = os.path.join(image_dir, ""), os.path.join(mask_dir, "")
        samples = [(image_dir + name, mask_dir + mask) for name, mask in zip(names, masks)]
        super().__init__(samples, transforms=transforms, check_files=False)


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
