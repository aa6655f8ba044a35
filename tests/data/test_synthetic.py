import hashlib

import numpy as np
import pytest
from PIL import Image

from detkit.data import write_synthetic_pennfudan


def digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def test_same_seed_same_files(tmp_path):
    a = write_synthetic_pennfudan(tmp_path / "a", 5, seed=3, size_range=(40, 60))
    b = write_synthetic_pennfudan(tmp_path / "b", 5, seed=3, size_range=(40, 60))
    c = write_synthetic_pennfudan(tmp_path / "c", 5, seed=4, size_range=(40, 60))
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_contents_cover_the_edge_cases(tmp_path):
    root = write_synthetic_pennfudan(tmp_path, 60, seed=0, size_range=(40, 80))
    negatives = thin = border = 0
    for mask_path in sorted((root / "PedMasks").glob("*_mask.png")):
        image = Image.open(root / "PNGImages" / mask_path.name.replace("_mask", ""))
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == (image.height, image.width)
        ids = np.unique(mask[mask > 0])
        assert ids.tolist() == list(range(1, len(ids) + 1))  # contiguous 1..N, as Penn-Fudan
        negatives += len(ids) == 0
        for i in ids:
            ys, xs = np.nonzero(mask == i)
            thin += xs.min() == xs.max() or ys.min() == ys.max()
            border += (
                xs.min() == 0
                or ys.min() == 0
                or xs.max() == mask.shape[1] - 1
                or ys.max() == mask.shape[0] - 1
            )
    assert negatives >= 1 and thin >= 1 and border >= 1


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_mask_modes(tmp_path, mode):
    root = write_synthetic_pennfudan(
        tmp_path, 1, size_range=(30, 30), mask_mode=mode, negative_fraction=0
    )
    (mask_path,) = (root / "PedMasks").glob("*.png")
    assert Image.open(mask_path).mode == mode


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_images": -1}, "num_images"),
        ({"size_range": (10, 20)}, "size_range"),
        ({"size_range": (50, 20)}, "size_range"),
        ({"negative_fraction": 2}, "negative_fraction"),
        ({"mask_mode": "RGB"}, "mask_mode"),
        ({"max_instances": 0}, "max_instances"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_synthetic_pennfudan(tmp_path, **kwargs)
