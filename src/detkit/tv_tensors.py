"""detkit's tv_tensor for keypoints with visibility, and the conversion of a sample to tv_tensors.

detkit carries samples as :mod:`torchvision.tv_tensors`, so that every
``torchvision.transforms.v2`` transform moves an image and all of its target together:
``image`` a :class:`~torchvision.tv_tensors.Image`, ``boxes`` a
:class:`~torchvision.tv_tensors.BoundingBoxes` (XYXY, ``canvas_size=(H, W)``), ``masks`` a
:class:`~torchvision.tv_tensors.Mask` and ``keypoints`` a :class:`KeyPointsWithVisibility`.

torchvision's own :class:`~torchvision.tv_tensors.KeyPoints` hold coordinates only
(``[..., 2]``) and flip them to ``W - 1 - x``. Keypoint R-CNN wants ``[N, K, 3]`` with a
visibility column, and a mirror image must also swap left and right keypoints.
:class:`KeyPointsWithVisibility` is that tensor, registered with every geometric
``v2.functional`` kernel:

* coordinates move with torchvision's keypoint kernels (resize, crop, pad, affine, rotate,
  perspective, elastic), and a point that leaves the canvas becomes ``(0, 0, 0)``
  (visibility 0); points with visibility 0 stay ``(0, 0, 0)``;
* flips mirror ``x -> W - x`` (continuous coordinates, like the boxes' edges) and swap left
  and right through the tensor's ``flip_indices``; a flip of keypoints without
  ``flip_indices`` is an error naming the fix, never a silent left/right mix-up.

>>> from torchvision.transforms import v2
>>> kp = KeyPointsWithVisibility(
...     [[[1.0, 2.0, 2.0], [3.0, 2.0, 1.0]]],
...     canvas_size=(4, 10),
...     flip_indices=(1, 0),
... )
>>> v2.functional.horizontal_flip(kp).tolist()
[[[7.0, 2.0, 1.0], [9.0, 2.0, 2.0]]]
>>> v2.functional.resize(kp, [8, 20]).tolist()
[[[2.0, 4.0, 2.0], [6.0, 4.0, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

__all__ = [
    "GEOMETRIC_FUNCTIONALS",
    "KeyPointsWithVisibility",
    "check_flip_indices",
    "hide_outside",
    "plain",
    "to_xyxy",
    "xyxy_boxes",
]

_XYXY = tv_tensors.BoundingBoxFormat.XYXY


def check_flip_indices(
    flip_indices: Sequence[int], num_keypoints: int | None = None
) -> tuple[int, ...]:
    """Validate a flip permutation and return it as a tuple of ints.

    Output keypoint ``k`` of a flip is input keypoint ``flip_indices[k]``. A left/right swap
    undone by a second flip must be a permutation that is its own inverse
    (``flip_indices[flip_indices[k]] == k``).

    Args:
        flip_indices: the permutation to check.
        num_keypoints: the expected length ``K``, when known.

    Raises:
        ValueError: naming what is wrong: the length, an index out of range, a repeated
            index, or a swap that a second flip would not undo.
        TypeError: for non-integer entries.

    >>> check_flip_indices([0, 2, 1])
    (0, 2, 1)
    >>> check_flip_indices([1, 2, 0])
    Traceback (most recent call last):
    ...
    ValueError: flip_indices: [1, 2, 0] is not its own inverse: keypoint 0 becomes 1
    but 1 becomes 2 (a left/right swap must exchange pairs)
    """
    if isinstance(flip_indices, torch.Tensor):
        flip_indices = flip_indices.tolist()
    if isinstance(flip_indices, (str, bytes)) or not isinstance(flip_indices, Sequence):
        raise TypeError(f"flip_indices must be a sequence of ints, got {flip_indices!r}")
    values = list(flip_indices)
    for value in values:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"flip_indices must hold integers, got {value!r} in {values}")
    values = [int(v) for v in values]
    k = len(values)
    if num_keypoints is not None and k != num_keypoints:
        raise ValueError(
            f"flip_indices has {k} entries but the keypoints have K = {num_keypoints}: "
            "it needs one entry per keypoint"
        )
    for value in values:
        if not 0 <= value < k:
            raise ValueError(f"flip_indices: index {value} is out of range for {k} keypoints")
    if len(set(values)) != k:
        raise ValueError(f"flip_indices: {values} repeats an index; it must be a permutation")
    for i, j in enumerate(values):
        if values[j] != i:
            raise ValueError(
                f"flip_indices: {values} is not its own inverse: keypoint {i} becomes {j} but {j} "
                f"becomes {values[j]} (a left/right swap must exchange pairs)"
            )
    return tuple(values)


def hide_outside(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Mark keypoints outside the ``width x height`` canvas as not labelled.

    A keypoint whose ``(x, y)`` lies outside ``[0, width] x [0, height]`` (or is not finite)
    gets visibility ``0``, and every row with visibility ``0`` becomes ``(0, 0, 0)``, as the
    contract wants. The input is not modified; a
    :class:`~detkit.tv_tensors.KeyPointsWithVisibility` stays one.

    Args:
        keypoints: ``Tensor[N, K, 3]`` (``x, y, visibility``).
        height: canvas height ``H``.
        width: canvas width ``W``.

    Returns:
        a new ``Tensor[N, K, 3]``.

    >>> kp = torch.tensor([[[3.0, 1.0, 2.0], [5.5, 1.0, 2.0]]])
    >>> hide_outside(kp, height=4, width=5)
    tensor([[[3., 1., 2.],
             [0., 0., 0.]]])
    """
    data = plain(keypoints)
    x, y, v = data[..., 0], data[..., 1], data[..., 2]
    inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height) & (v > 0)
    # where() rather than a product, so that a NaN coordinate becomes 0 too.
    out = torch.where(inside.unsqueeze(-1), data, torch.zeros((), dtype=data.dtype))
    if isinstance(keypoints, tv_tensors.TVTensor):
        return tv_tensors.wrap(out, like=keypoints)
    return out


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a plain :class:`torch.Tensor` (a tv_tensor's data without its class).

    No copy is made. Arithmetic on plain tensors skips tv_tensors' per-operation dispatch.

    >>> plain(tv_tensors.Mask(torch.zeros(1, 2, 2))).__class__.__name__
    'Tensor'
    """
    if type(tensor) is torch.Tensor:
        return tensor
    return tensor.as_subclass(torch.Tensor)


def to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``boxes`` in the contract's XYXY format.

    A :class:`~torchvision.tv_tensors.BoundingBoxes` in another format (``XYWH``,
    ``CXCYWH``) is converted, so that it is never read as XYXY by mistake; XYXY boxes and
    plain tensors (which the contract defines as XYXY) are returned as they are.

    >>> xywh = tv_tensors.BoundingBoxes(
    ...     [[1.0, 2.0, 3.0, 4.0]], format="XYWH", canvas_size=(10, 10)
    ... )
    >>> to_xyxy(xywh).tolist(), to_xyxy(xywh).format.name
    ([[1.0, 2.0, 4.0, 6.0]], 'XYXY')
    """
    if isinstance(boxes, tv_tensors.BoundingBoxes) and (boxes.format != _XYXY):
        if tv_tensors.is_rotated_bounding_format(boxes.format):
            raise ValueError(
                f"boxes: rotated boxes ({boxes.format.name}) cannot be converted to the axis-"
                "aligned XYXY boxes that torchvision's detection models take"
            )
        return F.convert_bounding_box_format(boxes, new_format=_XYXY)
    return boxes


# What BoundingBoxes(...) sets on a new tensor; xyxy_boxes sets the same itself only when this
# torchvision sets exactly these (a later one may add metadata: then the constructor runs).
_BOX_METADATA = {"format", "canvas_size", "clamping_mode"}
_SETS_BOX_METADATA = (
    set(vars(tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(1, 1))))
    == _BOX_METADATA
)


def xyxy_boxes(boxes: torch.Tensor, canvas_size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """``boxes [N, 4]`` as XYXY :class:`~torchvision.tv_tensors.BoundingBoxes` on ``canvas_size``.

    The same as ``BoundingBoxes(boxes, format="XYXY", canvas_size=canvas_size)`` (no copy,
    clamping mode ``"soft"``), made in a third of the constructor's time: a dataset's
    ``__getitem__`` calls it right after decoding an image, when each Python call costs
    several times its usual time.

    >>> boxes = xyxy_boxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]), (8, 10))
    >>> type(boxes).__name__, boxes.format.name, boxes.canvas_size
    ('BoundingBoxes', 'XYXY', (8, 10))
    >>> boxes.clamping_mode
    'soft'
    """
    if not _SETS_BOX_METADATA or type(boxes) is not torch.Tensor or boxes.ndim != 2:
        return tv_tensors.BoundingBoxes(boxes, format=_XYXY, canvas_size=canvas_size)
    result = boxes.as_subclass(tv_tensors.BoundingBoxes)
    result.format, result.canvas_size, result.clamping_mode = _XYXY, canvas_size, "soft"
    return result


class KeyPointsWithVisibility(tv_tensors.TVTensor):
    """Keypoints ``[N, K, 3]`` (``x, y, visibility``) that every v2 transform moves correctly.

    The ``keypoints`` field of detkit's targets: one row of ``K`` keypoints per instance, in
    the continuous pixel coordinates of the boxes, with COCO's visibility (``0`` not
    labelled, row ``(0, 0, 0)``; ``1`` occluded; ``2`` visible). It is a tensor, so
    torchvision's Keypoint R-CNN takes it as it is.

    Args:
        data: anything :func:`torch.as_tensor` takes, of shape ``[N, K, 3]``.
        canvas_size: ``(H, W)`` of the image the keypoints belong to.
        flip_indices: the left/right permutation a flip applies (output keypoint ``k`` is
            input keypoint ``flip_indices[k]``), e.g.
            :data:`~detkit.data.transforms.COCO_PERSON_FLIP_INDICES`; ``tuple(range(K))``
            for keypoints without a left and right; ``None`` (unknown) makes a flip raise.
        dtype: optional dtype (a floating-point one).
        device: optional device.
        requires_grad: optional autograd flag.

    Raises:
        ValueError: for a shape other than ``[N, K, 3]`` or an invalid ``flip_indices``.
        TypeError: for an integer dtype.

    >>> kp = KeyPointsWithVisibility(torch.zeros(2, 17, 3), canvas_size=(480, 640))
    >>> kp.shape, kp.canvas_size, kp.flip_indices
    (torch.Size([2, 17, 3]), (480, 640), None)
    """

    canvas_size: tuple[int, int]
    flip_indices: tuple[int, ...] | None

    @classmethod
    def _wrap(
        cls,
        tensor: torch.Tensor,
        *,
        canvas_size: tuple[int, int],
        flip_indices: tuple[int, ...] | None,
    ) -> KeyPointsWithVisibility:
        points = tensor.as_subclass(cls)
        points.canvas_size = (int(canvas_size[0]), int(canvas_size[1]))
        points.flip_indices = flip_indices
        return points

    def __new__(
        cls,
        data: Any,
        *,
        canvas_size: tuple[int, int],
        flip_indices: Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | int | None = None,
        requires_grad: bool | None = None,
    ) -> KeyPointsWithVisibility:
        tensor = cls._to_tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        if tensor.ndim != 3 or tensor.shape[-1] != 3:
            raise ValueError(
                f"keypoints must have shape [N, K, 3] (x, y, visibility), got {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise TypeError(f"keypoints must have a floating-point dtype, got {tensor.dtype}")
        if len(canvas_size) != 2:
            raise ValueError(f"canvas_size must be (height, width), got {canvas_size!r}")
        indices = None
        if flip_indices is not None:
            indices = check_flip_indices(flip_indices, tensor.shape[1])
        return cls._wrap(
            tensor, canvas_size=(int(canvas_size[0]), int(canvas_size[1])), flip_indices=indices
        )

    @classmethod
    def wrap(
        cls, tensor: torch.Tensor, like: KeyPointsWithVisibility, **kwargs: Any
    ) -> KeyPointsWithVisibility:
        return cls._wrap(
            tensor,
            canvas_size=kwargs.get("canvas_size", like.canvas_size),
            flip_indices=kwargs.get("flip_indices", like.flip_indices),
        )

    @classmethod
    def _wrap_output(
        cls,
        output: torch.Tensor,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        # .to(), .clone(), .detach() and friends keep the class; the metadata comes from the
        # first such tensor among the arguments (as torchvision's BoundingBoxes do it).
        flat, _ = tree_flatten(list(args) + list((kwargs or {}).values()))
        like = next(x for x in flat if isinstance(x, KeyPointsWithVisibility))
        if isinstance(output, torch.Tensor) and not isinstance(output, KeyPointsWithVisibility):
            return cls.wrap(output, like)
        if isinstance(output, (tuple, list)):
            return type(output)(cls.wrap(part, like) for part in output)
        return output

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return self._make_repr(canvas_size=self.canvas_size, flip_indices=self.flip_indices)


def _mirror(points: KeyPointsWithVisibility, axis: int) -> KeyPointsWithVisibility:
    """A flip: ``x -> W - x`` (or ``y -> H - y``), then the left/right swap."""
    data = plain(points)
    k = data.shape[1]
    if k and points.flip_indices is None:
        raise ValueError(
            f"a flip reached keypoints (K = {k}) that have no flip_indices. A mirror image "
            "turns a left wrist into what looks like a right wrist, so a flip must swap left and "
            "right keypoints: give the dataset flip_indices (COCO_PERSON_FLIP_INDICES for COCO "
            "persons, flip_indices_from_names(names) for your own), pass flip_indices= to the "
            "flip transform, or use tuple(range(K)) for keypoints that have no left and right"
        )
    extent = points.canvas_size[1 - axis]
    out = data.clone()
    visible = out[..., 2] > 0
    out[..., axis] = torch.where(visible, extent - out[..., axis], out[..., axis])
    if k:
        out = out.index_select(1, torch.tensor(points.flip_indices, device=out.device))
    return KeyPointsWithVisibility.wrap(out, like=points)


@F.register_kernel(F.horizontal_flip, KeyPointsWithVisibility)
def _horizontal_flip(points: KeyPointsWithVisibility, *args: Any, **kwargs: Any) -> Any:
    return _mirror(points, 0)


@F.register_kernel(F.vertical_flip, KeyPointsWithVisibility)
def _vertical_flip(points: KeyPointsWithVisibility, *args: Any, **kwargs: Any) -> Any:
    return _mirror(points, 1)


def _through_v2_keypoints(functional: Any) -> Any:
    """A kernel that moves the coordinates with torchvision's keypoint kernel for
    ``functional``, keeps the visibility column, and hides points that left the canvas."""

    def kernel(points: KeyPointsWithVisibility, *args: Any, **kwargs: Any) -> Any:
        data = plain(points)
        xy = tv_tensors.KeyPoints(data[..., :2], canvas_size=points.canvas_size)
        moved = functional(xy, *args, **kwargs)
        canvas = moved.canvas_size
        out = torch.cat([plain(moved).to(data.dtype), data[..., 2:]], dim=-1)
        out = hide_outside(out, *canvas)
        return KeyPointsWithVisibility.wrap(out, like=points, canvas_size=canvas)

    kernel.__name__ = f"_{functional.__name__}_keypoints_with_visibility"
    return kernel


#: The geometric ``v2.functional`` functionals with a torchvision keypoint kernel.
GEOMETRIC_FUNCTIONALS = (
    F.resize,
    F.affine,
    F.rotate,
    F.pad,
    F.crop,
    F.perspective,
    F.elastic,
    F.center_crop,
    F.resized_crop,
)

for _functional in GEOMETRIC_FUNCTIONALS:
    F.register_kernel(_functional, KeyPointsWithVisibility)(_through_v2_keypoints(_functional))


@F.register_kernel(F.get_size, KeyPointsWithVisibility)
def _get_size(points: KeyPointsWithVisibility) -> list[int]:
    return list(points.canvas_size)


@F.register_kernel(F.to_dtype, KeyPointsWithVisibility)
def _to_dtype(points: KeyPointsWithVisibility, *args: Any, **kwargs: Any) -> Any:
    # Converting an image's dtype leaves its keypoints alone, as it does boxes.
    return points
