"""Shared test factories and hypothesis strategies (one place, as the house style asks).

Keep data tiny: images of at most a few dozen pixels a side, unless a test needs more.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

# -- masks -------------------------------------------------------------------------------------


@st.composite
def binary_masks(draw, max_instances: int = 4, max_side: int = 24, min_instances: int = 0):
    """uint8 Tensor[N, H, W] of random binary masks (empty masks included)."""
    n = draw(st.integers(min_instances, max_instances))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    data = draw(arrays(np.uint8, (n, h, w), elements=st.integers(0, 1)))
    return torch.from_numpy(data)


@st.composite
def id_masks(draw, max_id: int = 300, max_side: int = 24, dtype=np.uint16):
    """An instance-id mask [H, W] with random, possibly non-contiguous, ids (0 = background)."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    ids = draw(st.lists(st.integers(1, max_id), min_size=0, max_size=5, unique=True))
    values = st.sampled_from([0, *ids])
    return draw(arrays(dtype, (h, w), elements=values))


# -- targets -----------------------------------------------------------------------------------


def make_target(boxes, labels=None, *, image_id: int = 0, height: int = 32, width: int = 32):
    """A valid target from a list of XYXY boxes (masks filled from the boxes)."""
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = boxes_t.shape[0]
    masks = torch.zeros((n, height, width), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes_t.round().to(torch.int64).tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return {
        "boxes": boxes_t,
        "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.int64),
        "masks": masks,
        "area": masks.flatten(1).sum(1).to(torch.float32),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "image_id": image_id,
    }


@st.composite
def integer_boxes(draw, height: int, width: int, max_instances: int = 4, min_instances: int = 0):
    """Lists of non-degenerate integer XYXY boxes inside a ``width x height`` canvas."""
    n = draw(st.integers(min_instances, max_instances))
    boxes = []
    for _ in range(n):
        x1 = draw(st.integers(0, width - 1))
        y1 = draw(st.integers(0, height - 1))
        x2 = draw(st.integers(x1 + 1, width))
        y2 = draw(st.integers(y1 + 1, height))
        boxes.append([x1, y1, x2, y2])
    return boxes


@st.composite
def targets(draw, height: int = 32, width: int = 32, max_instances: int = 4):
    """Valid targets (boxes, labels, masks, area, iscrowd, image_id) for a fixed canvas."""
    boxes = draw(integer_boxes(height, width, max_instances))
    labels = [draw(st.integers(1, 5)) for _ in boxes]
    image_id = draw(st.integers(0, 10_000))
    return make_target(boxes, labels, image_id=image_id, height=height, width=width)


# -- models ------------------------------------------------------------------------------------


def detection_batch(
    *, size: int = 96, num_images: int = 2, num_keypoints: int = 0, seed: int = 0
) -> tuple[list[torch.Tensor], list[dict]]:
    """Random images with two large objects each (labels 1 and 2) for model smoke tests.

    The boxes are big enough to be matched by anchors of size 32 on any backbone, so every
    loss, the mask and keypoint heads included, sees positive samples. Keypoints, when asked
    for, lie inside their boxes and are all visible.
    """
    generator = torch.Generator().manual_seed(seed)
    s = size / 96
    boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [30.0, 6.0, 90.0, 52.0]]) * s
    images, batch = [], []
    for i in range(num_images):
        images.append(torch.rand(3, size, size, generator=generator))
        target = make_target(boxes.tolist(), [1, 2], image_id=i, height=size, width=size)
        if num_keypoints:
            offsets = torch.rand(2, num_keypoints, 2, generator=generator)
            xy = boxes[:, None, :2] + offsets * (boxes[:, None, 2:] - boxes[:, None, :2])
            target["keypoints"] = torch.cat([xy, torch.full((2, num_keypoints, 1), 2.0)], dim=2)
        batch.append(target)
    return images, batch
