"""Image-only transforms: conversions and colour. Targets pass through (as a new dict)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detkit.data.transforms.core import Transform
from detkit.tv_tensors import plain
from detkit.types import image_range_problem, sample_name

__all__ = [
    "PILToTensor",
    "RandomPhotometricDistort",
    "ToDtype",
    "ToImage",
]


class _ImageOnly(Transform):
    def _image(self, image: Any) -> Any:
        raise NotImplementedError

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        return self._image(image), None if target is None else dict(target)


def _check_float_range(image: Any, target: Any, name: str, consequence: str) -> None:
    """Refuse a float image outside ``0..1`` (:func:`detkit.types.image_range_problem`), for
    a transform that would hide the mistake from the checks downstream."""
    problem = image_range_problem(image)
    if problem is None:
        return
    if problem.startswith("contains"):  # NaN or infinite values
        raise ValueError(f"{name}: {sample_name(target)}: the image {problem}")
    # The problem's advice names ToDtype, which cannot help here: the span alone.
    low, high = (float(v) for v in torch.aminmax(plain(image).detach()))
    problem = f"holds values in [{low:.4g}, {high:.4g}], not 0..1"
    raise ValueError(
        f"{name}: {sample_name(target)}: the {image.dtype} image {problem}. {consequence}"
    )


class ToImage(_ImageOnly):
    """Convert a PIL image or an ``H x W x C`` numpy array to a ``tv_tensors.Image[C, H, W]``.

    The dtype is kept (``uint8`` for ordinary images); tensors pass through unchanged.

    >>> from PIL import Image
    >>> image, _ = ToImage()(Image.new("RGB", (5, 2)), None)
    >>> type(image).__name__, image.shape, image.dtype
    ('Image', torch.Size([3, 2, 5]), torch.uint8)
    """

    def _image(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return tv_tensors.Image(F.pil_to_tensor(image))
        if isinstance(image, np.ndarray):
            if image.ndim == 2:
                image = image[:, :, None]
            if image.ndim != 3:
                raise TypeError(
                    f"ToImage: a numpy image must be H x W or H x W x C, got shape {image.shape}"
                )
            image = np.ascontiguousarray(image)
            if not image.flags.writeable:  # torch.from_numpy warns on read-only arrays
                image = image.copy()
            return tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        if isinstance(image, torch.Tensor):
            return image
        raise TypeError(
            f"ToImage: image must be a PIL image, a numpy array or a tensor, got "
            f"{type(image).__name__}"
        )


class PILToTensor(_ImageOnly):
    """Convert a PIL image to a plain ``uint8`` ``Tensor[C, H, W]``; tensors pass through.

    Deprecated: :class:`ToImage` is the one conversion (it also takes numpy arrays and
    returns a ``tv_tensors.Image``, which every v2 transform recognises as the image).

    >>> from PIL import Image
    >>> ToImage()(Image.new("L", (3, 2)), None)[0].shape  # instead of PILToTensor()
    torch.Size([1, 2, 3])
    """

    def __init__(self) -> None:
        warnings.warn(
            "detkit's PILToTensor is deprecated: use ToImage (a tv_tensors.Image, which v2 "
            "transforms recognise)",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__()

    def _image(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            return F.pil_to_tensor(image)
        if isinstance(image, torch.Tensor):
            return image
        raise TypeError(f"PILToTensor: image must be a PIL image, got {type(image).__name__}")


class ToDtype(_ImageOnly):
    """Convert the image tensor to ``dtype``; with ``scale``, rescale values to its range.

    ``ToDtype(torch.float32, scale=True)`` turns a ``uint8`` image into the ``0..1`` floats
    torchvision's detection models take. Target tensors keep the contract's dtypes.

    Args:
        dtype: the image's new dtype.
        scale: rescale values (``uint8`` 0..255 to float 0..1, and back).

    Raises:
        TypeError: for a PIL image (convert it with :class:`ToImage` first).
        ValueError: with ``scale``, for a float image outside ``0..1`` (values in
            ``0..255``, say: ``scale`` rescales integer images only), naming the sample.

    >>> white = torch.full((3, 1, 1), 255, dtype=torch.uint8)
    >>> image, _ = ToDtype(torch.float32, scale=True)(white, None)
    >>> image.dtype, image.max().item()
    (torch.float32, 1.0)
    """

    def __init__(self, dtype: torch.dtype = torch.float32, *, scale: bool = False) -> None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.scale = bool(scale)

    def _repr_args(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale}

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if self.scale and isinstance(image, torch.Tensor) and image.is_floating_point():
            _check_float_range(
                image,
                target,
                "ToDtype(scale=True)",
                "scale=True rescales integer images only: a float image must already be in "
                "0..1. Give the image as uint8, or divide it by 255 first",
            )
        return super()._transform(image, target)

    def _image(self, image: Any) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"ToDtype: image must be a tensor, got {type(image).__name__} (put ToImage() "
                "before ToDtype)"
            )
        if image.dtype == self.dtype:
            return image
        out = F.to_dtype_image(plain(image), self.dtype, scale=self.scale)
        return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


class RandomPhotometricDistort(_ImageOnly):
    """SSD's photometric distortion (``torchvision.transforms.v2.RandomPhotometricDistort``).

    Brightness, contrast, saturation and hue jitter and a channel permutation, each applied
    with probability ``p``. The target is unchanged.

    Args:
        brightness: ``(min, max)`` brightness factor.
        contrast: ``(min, max)`` contrast factor.
        saturation: ``(min, max)`` saturation factor.
        hue: ``(min, max)`` hue shift, within ``[-0.5, 0.5]``.
        p: probability of each distortion.

    Raises:
        ValueError: for a float image outside ``0..1`` (its colour changes would clamp it
            into ``0..1`` and wash it out), naming the sample.

    >>> torch.manual_seed(0) is not None
    True
    >>> grey = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    >>> image, _ = RandomPhotometricDistort(p=1.0)(grey, None)
    >>> image.shape, image.dtype
    (torch.Size([3, 2, 2]), torch.uint8)
    """

    def __init__(
        self,
        brightness: tuple[float, float] = (0.875, 1.125),
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue: tuple[float, float] = (-0.05, 0.05),
        p: float = 0.5,
    ) -> None:
        self._distort = v2.RandomPhotometricDistort(
            brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p
        )
        self._args = {
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "p": p,
        }

    def _repr_args(self) -> dict[str, Any]:
        return self._args

    def _transform(self, image: Any, target: Mapping[str, Any] | None) -> tuple[Any, Any]:
        _check_float_range(
            image,
            target,
            type(self).__name__,
            "Its colour changes clamp float images to 0..1, which would wash this one out. "
            "Give the image as uint8 (put the distortion before ToDtype), or in 0..1",
        )
        return super()._transform(image, target)

    def _image(self, image: Any) -> Any:
        if isinstance(image, tv_tensors.TVTensor):
            return tv_tensors.wrap(self._distort(plain(image)), like=image)
        return self._distort(image)
