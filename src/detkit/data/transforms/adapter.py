"""Run any ``torchvision.transforms.v2`` transform on detkit's ``(image, target)``.

v2 moves images, boxes (:class:`~torchvision.tv_tensors.BoundingBoxes`), masks
(:class:`~torchvision.tv_tensors.Mask`) and points (:class:`~torchvision.tv_tensors.KeyPoints`)
with one set of random parameters, but knows nothing of visibility, left and right, ``area``
or the other per-instance fields. :class:`V2Transform` wraps the target's tensors as
tv_tensors, lets v2 do the geometry, and then does what v2 does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detkit.data.transforms.core import (
    Transform,
    _check_sample,
    _drop_degenerate,
    _recompute_area,
    _where,
    select_instances,
)
from detkit.data.transforms.keypoints import (
    _flip_repr,
    _flip_setting,
    _require_flip_indices,
    hide_outside,
)
from detkit.types import image_size

__all__ = ["V2Transform"]


class _Points(tv_tensors.KeyPoints):
    """Points in continuous pixel coordinates, the contract's: a flip maps ``x`` to ``W - x``.

    v2's own KeyPoints flip to ``W - 1 - x`` (pixel indices) while its resize and affine
    kernels treat points as continuous; this subclass keeps every kernel but the flips.
    """


# Registered for detkit's private subclass only: v2's KeyPoints are left as they are.
@F.register_kernel(F.horizontal_flip, _Points)
def _horizontal_flip_points(points: _Points, **kwargs: Any) -> _Points:
    out = points.as_subclass(torch.Tensor).clone()
    out[..., 0] = points.canvas_size[1] - out[..., 0]
    return tv_tensors.wrap(out, like=points)


@F.register_kernel(F.vertical_flip, _Points)
def _vertical_flip_points(points: _Points, **kwargs: Any) -> _Points:
    out = points.as_subclass(torch.Tensor).clone()
    out[..., 1] = points.canvas_size[0] - out[..., 1]
    return tv_tensors.wrap(out, like=points)


def _has_mirror(transform: Any) -> bool:
    """Whether a v2 transform contains a flip (v2 containers are ``nn.Module`` trees)."""
    if not isinstance(transform, torch.nn.Module):
        return False
    mirrors = (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)
    return any(isinstance(module, mirrors) for module in transform.modules())


def _is_reflection(probes: torch.Tensor) -> bool:
    """Whether the map that moved the canvas corners ``(0, 0), (W, 0), (0, H)`` mirrors.

    The two edge vectors keep the orientation of the plane unless the map reflects it (a
    rotation keeps it, a flip reverses it, two flips restore it).
    """
    e1, e2 = probes[1] - probes[0], probes[2] - probes[0]
    return bool(e1[0] * e2[1] - e1[1] * e2[0] < 0)


def _to_v2_image(image: Any) -> Any:
    if isinstance(image, torch.Tensor) and not isinstance(image, tv_tensors.TVTensor):
        return image.as_subclass(tv_tensors.Image)
    return image


def _from_v2_image(image: Any, like: Any) -> Any:
    if isinstance(image, tv_tensors.TVTensor) and not isinstance(like, tv_tensors.TVTensor):
        return image.as_subclass(torch.Tensor)
    return image


class V2Transform(Transform):
    """Run a ``torchvision.transforms.v2`` transform on a detkit ``(image, target)``.

    The image, ``boxes``, ``masks`` and the keypoints' coordinates go through the v2
    transform together (one draw of its random parameters). Then, whenever the transform
    moved the geometry:

    * keypoints that left the canvas get visibility 0 and become ``(0, 0, 0)``;
    * if the transform mirrored the image (a flip, or anything else reversing orientation,
      found by tracking the canvas corners), keypoints swap left and right through
      ``flip_indices``; with keypoints and no ``flip_indices`` that is an error (raised for
      every sample with keypoints when the transform contains a v2 flip, whether or not the
      coin says flip) unless ``swap_left_right=False``;
    * instances whose box lost all width or height (an object cropped away) are dropped from
      every per-instance field;
    * ``area`` (if present) is recomputed from the masks, or from the boxes without masks.

    If the transform drops boxes itself (``v2.SanitizeBoundingBoxes``), every other
    per-instance field drops the same instances. Extra per-instance tensors are carried
    along unchanged. Keypoint flips use detkit's convention ``x -> W - x``
    (see :mod:`detkit.data.transforms.keypoints`), not v2's ``W - 1 - x``.

    Args:
        transform: a ``torchvision.transforms.v2`` transform (or ``v2.Compose``), or any
            callable taking and returning a dict of tv_tensors with keys ``image``,
            ``boxes``, ``labels`` (instance indices) and optionally ``masks``, ``points``.
        flip_indices: left/right keypoint permutation applied when the transform mirrors.
        swap_left_right: set ``False`` to mirror keypoints without swapping identities
            (keypoints without a left and right).

    >>> from torchvision.transforms import v2
    >>> pad = V2Transform(v2.Pad([2, 0, 0, 0]))  # two columns on the left
    >>> image, target = pad(torch.zeros(3, 4, 4, dtype=torch.uint8),
    ...     {"boxes": torch.tensor([[0.0, 0, 2, 2]]), "labels": torch.tensor([1]),
    ...      "keypoints": torch.tensor([[[1.0, 1.0, 2.0]]]), "area": torch.tensor([4.0])})
    >>> image.shape, target["boxes"].tolist(), target["keypoints"].tolist()
    (torch.Size([3, 4, 6]), [[2.0, 0.0, 4.0, 2.0]], [[[3.0, 1.0, 2.0]]])
    """

    def __init__(
        self,
        transform: Any,
        *,
        flip_indices: Sequence[int] | None = None,
        swap_left_right: bool = True,
    ) -> None:
        if isinstance(transform, Transform):
            raise TypeError(
                f"transform is already a detkit transform ({type(transform).__name__}); "
                "V2Transform wraps torchvision.transforms.v2 transforms"
            )
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.flip_indices = _flip_setting(flip_indices, swap_left_right)
        self.swap_left_right = bool(swap_left_right)
        self._mirrors = _has_mirror(transform)

    def _repr_args(self) -> dict[str, Any]:
        return {"transform": self.transform, **_flip_repr(self.flip_indices, self.swap_left_right)}

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        name = type(self).__name__
        if target is None:
            return _from_v2_image(self.transform(_to_v2_image(image)), image), None
        height, width = _check_sample(image, target, name)
        where = _where(target)
        boxes = target["boxes"]
        num = boxes.shape[0]
        keypoints = target.get("keypoints")
        k = 0 if keypoints is None else keypoints.shape[1]
        if k and self._mirrors:
            _require_flip_indices(self.flip_indices, self.swap_left_right, keypoints, where, name)

        canvas = (height, width)
        # Three canvas corners ride along with the keypoints: they reveal whether the
        # transform moved anything and whether it mirrored the image.
        dtype = keypoints.dtype if k else torch.float32
        probes = torch.tensor(
            [[0.0, 0.0], [width, 0.0], [0.0, height]], dtype=dtype, device=boxes.device
        )
        xy = keypoints[..., :2].reshape(-1, 2) if k else probes[:0]
        sample: dict[str, Any] = {
            "image": _to_v2_image(image),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
            # Instance indices under the name v2.SanitizeBoundingBoxes looks for: what it
            # keeps tells which instances survive.
            "labels": torch.arange(num, device=boxes.device),
            "points": _Points(torch.cat([xy, probes]), canvas_size=canvas),
        }
        if "masks" in target:
            sample["masks"] = tv_tensors.Mask(target["masks"])
        out = self.transform(sample)
        if not isinstance(out, Mapping) or not {"image", "boxes", "labels", "points"} <= set(out):
            raise TypeError(
                f"{name}: the wrapped transform must return the dict it was given (keys image, "
                f"boxes, labels, points, masks), got {type(out).__name__}"
            )

        new_image = _from_v2_image(out["image"], image)
        new_height, new_width = image_size(new_image)
        out_boxes = out["boxes"]
        if isinstance(out_boxes, tv_tensors.BoundingBoxes) and out_boxes.format != (
            tv_tensors.BoundingBoxFormat.XYXY
        ):
            out_boxes = F.convert_bounding_box_format(
                out_boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY
            )
        out_boxes = out_boxes.as_subclass(torch.Tensor)
        index = out["labels"]
        if out_boxes.shape[0] != index.shape[0]:
            raise ValueError(
                f"{name}: {where}: the wrapped transform dropped boxes without saying which; "
                "drop instances with detkit's SanitizeBoxes (or v2.SanitizeBoundingBoxes with "
                "its default labels_getter) so that every field stays aligned"
            )
        points = out["points"].as_subclass(torch.Tensor)
        if points.shape[0] != num * k + 3:
            raise ValueError(
                f"{name}: the wrapped transform removed keypoints (e.g. v2.SanitizeKeyPoints); "
                "detkit keeps every keypoint and marks those outside the image invisible instead"
            )
        moved = (new_height, new_width) != canvas or not torch.equal(points[-3:], probes)

        kept_all = index.shape[0] == num and torch.equal(index, sample["labels"])
        # masks and keypoints are replaced below: selecting them first would copy for nothing.
        rest = {key: value for key, value in target.items() if key not in ("masks", "keypoints")}
        result = rest if kept_all else select_instances(rest, index)
        result["boxes"] = out_boxes
        if "masks" in target:
            result["masks"] = out["masks"].as_subclass(torch.Tensor)
            if result["masks"].shape[0] != index.shape[0]:
                raise ValueError(f"{name}: {where}: the wrapped transform dropped masks")
        if keypoints is not None:
            result["keypoints"] = self._keypoints(
                keypoints, points, index, moved, (new_height, new_width), where
            )
        if moved:
            result = _drop_degenerate(result)
            _recompute_area(result)
        return new_image, result

    def _keypoints(
        self,
        keypoints: torch.Tensor,
        points: torch.Tensor,
        index: torch.Tensor,
        moved: bool,
        canvas: tuple[int, int],
        where: str,
    ) -> torch.Tensor:
        num, k = keypoints.shape[:2]
        if not k:
            return keypoints[index]
        xy = points[:-3].reshape(num, k, 2)
        new = torch.cat([xy, keypoints[..., 2:]], dim=-1)[index]
        if moved and _is_reflection(points[-3:]):
            _require_flip_indices(
                self.flip_indices, self.swap_left_right, keypoints, where, type(self).__name__
            )
            if self.flip_indices is not None:
                new = new[:, list(self.flip_indices)]
        return hide_outside(new, *canvas)
