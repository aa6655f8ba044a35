"""Image and mask file reading shared by the datasets: one decode path, header sizes, errors.

Every function takes ``where`` (``"sample 3"``, ``"image id 17"``, or a :class:`LazyName` that
forms it only if an error is raised) so that its errors name the sample as its dataset does,
and ``what`` (``"image"``, ``"mask"``) to name the file's role.

What every file read here goes through, in this order (the datasets' docstrings point here):

1. The header is read first (PNG and JPEG from their bytes, other formats by PIL's lazy open).
2. **Pixel limit**: a file whose header announces more than ``max_pixels`` pixels is refused
   before any pixel is decoded (a decompression bomb: a few kilobytes that inflate to
   gigabytes).
3. **Lossy masks** (JPEG, lossy WebP, AVIF, JPEG-compressed TIFF, told by the header, not
   by the file's extension) are refused: compression artefacts turn object edges into ids
   that belong to no object.
4. Decoding: torchvision's decoders for PNG and JPEG (they write straight into a tensor,
   about 1 ms an image faster than PIL), PIL for the rest. A PNG with damaged image data (a
   failed CRC), on which torchvision's decoder would crash the process, is refused first.
5. **16-bit images** become 8-bit as ``value >> 8`` (the full 0..65535 range onto 0..255,
   as PIL reads 16-bit RGB); 16-bit masks keep their ids, 1-bit ones hold 0 and 1, 2- and
   4-bit gray ones read as PIL and OpenCV read them (scaled to 0..255: ids x85, x17).
6. **EXIF orientation** (``exif=True``) is applied, so that pixels come out as image viewers
   and labelling tools show them; :func:`header_size` reports the size after it.
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from detkit.data._file_checks import why_unidentified, why_unreadable
from detkit.data._image_headers import (
    ImageHeader,
    NeedMoreBytes,
    open_lazily,
    parse_header,
    pil_header,
    png_data_crc_error,
)
from detkit.data._orientation import inverse_orientation, orient
from detkit.types import PathLike

_tv_decode_image: Any
try:
    import torchvision.io  # noqa: F401  - loads torchvision's image ops into torch.ops.image

    # The ops themselves: the public wrappers add a deprecation warning per call (torchvision
    # 0.29), whose suppression costs more than the decode of a small mask.
    _tv_decode_image = torch.ops.image.decode_image
except (ImportError, AttributeError, RuntimeError):  # no image ops: PIL does all the work
    _tv_decode_image = None

# Mask modes that hold one integer per pixel. "1" is a binary mask (one instance).
ID_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")
_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TV_UNCHANGED, _TV_RGB = 0, 3  # torchvision.io.ImageReadMode values
_HEAD_BYTES = 1 << 12  # a PNG's or JPEG's header, unless a large EXIF block comes first

_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_readv = getattr(os, "readv", None)

#: A dataset's ``max_image_pixels``, the largest image (in pixels) it decodes; ``None`` for
#: no limit, or ``"pil"`` for Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) at the time
#: the dataset is made.
MaxPixels = int | None | Literal["pil"]


class LazyName(functools.partial):
    """A sample's name for error messages, formed only when one is written.

    ``LazyName(make, *args)`` is ``make(*args)`` when formatted. Reading a sample names it in
    every call but rarely fails: forming the name (a ``Path`` to text, an f-string) costs
    about 0.1 ms right after a decode has evicted the caches, a tenth of the budget over
    decoding. A ``functools.partial`` is made without running Python code, unlike a class
    with an ``__init__`` holding a lambda.
    """

    def __str__(self) -> str:
        return str(self())


#: What names a sample in the errors raised here.
Where = str | LazyName


class _NotAFile(Exception):
    """The path is a FIFO, device or socket (``read_error`` says which)."""


def resolve_max_pixels(value: MaxPixels) -> int | None:
    """The pixel limit a dataset keeps: ``"pil"`` is ``PIL.Image.MAX_IMAGE_PIXELS`` now.

    Raises:
        TypeError: for anything but a positive int, ``None`` or ``"pil"``.
    """
    if value == "pil":
        value = Image.MAX_IMAGE_PIXELS
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(
            f"max_image_pixels must be a positive int, None (no limit) or 'pil' (PIL's "
            f"Image.MAX_IMAGE_PIXELS), got {value!r}"
        )
    return value


def read_error(where: Where, path: PathLike, what: str, exc: BaseException) -> OSError | ValueError:
    """The error to raise when ``path`` cannot be read, naming the sample and the file."""
    why = why_unreadable(str(path))
    if why == "does not exist":
        return FileNotFoundError(f"{where}: {what} file not found: '{path}'")
    if why is not None and "permission" in why:
        return PermissionError(f"{where}: cannot read {what} file '{path}' (permission denied)")
    if why is not None:
        return ValueError(f"{where}: {what} path '{path}' {why}; expected an image file")
    if isinstance(exc, PermissionError) or not os.access(path, os.R_OK):
        return PermissionError(f"{where}: cannot read {what} file '{path}' (permission denied)")
    if isinstance(exc, OSError) and exc.errno is not None:  # the OS's, not a decoder's
        return OSError(exc.errno, f"{where}: cannot read {what} file '{path}': {exc.strerror}")
    if isinstance(exc, UnidentifiedImageError):
        return ValueError(f"{where}: cannot decode {what} file '{path}': {why_unidentified(path)}")
    return ValueError(f"{where}: cannot decode {what} file '{path}' (corrupt or truncated?): {exc}")


def decode(
    path: PathLike,
    where: Where,
    what: str,
    *,
    rgb: bool,
    max_pixels: int | None = None,
    exif: bool = True,
) -> torch.Tensor:
    """Decode ``path`` to a ``Tensor[C, H, W]``: RGB uint8 when ``rgb``, else an id mask.

    See the module's docstring for the checks, in order. Without ``rgb`` the result is the
    file's integer channels unchanged (uint8 or uint16); a file whose PIL mode is not one of
    :data:`ID_MASK_MODES` is refused.

    Raises:
        FileNotFoundError, PermissionError: naming the file.
        ValueError: for a directory, a corrupt file, one over ``max_pixels``, a lossy mask.
    """
    data = _read_bytes(path, where, what)
    view = data.data
    try:
        header = parse_header(view)
    except (NeedMoreBytes, ValueError) as exc:
        raise read_error(where, path, what, exc) from None
    opened = None
    if header is None:
        opened = _open_with_pil(view, where, path, what)
        header = pil_header(opened, view)
    _check_header(header, where, path, what, rgb=rgb, max_pixels=max_pixels)
    tensor = None
    if _tv_decode_image is not None and opened is None and (rgb or not header.low_bit_png):
        if header.format == "PNG":  # its decoder would crash the process on damaged data
            damage = png_data_crc_error(view)
            if damage is not None:
                raise ValueError(
                    f"{where}: {what} file '{path}' is corrupt: {damage}; replace it (decoding "
                    "it would crash the process: torchvision's PNG decoder)"
                )
        # On failure PIL reports the problem, or reads what torchvision cannot. (try, not
        # contextlib.suppress: its object costs ~10 us right after a decode.)
        try:  # noqa: SIM105 (see above)
            tensor = _tv_decode_image(
                torch.from_numpy(data), _TV_RGB if rgb else _TV_UNCHANGED, False
            )
        except RuntimeError:
            pass
    if tensor is None:
        if opened is None:
            try:
                opened = open_lazily(view)
            except (OSError, SyntaxError, Image.DecompressionBombError):
                # A PNG or JPEG broken after its header: opened again, to raise the error
                # that names the file (only here: its catch_warnings costs ~10 us a read).
                opened = _open_with_pil(view, where, path, what)
        tensor = _decode_with_pil(opened, where, path, what, rgb=rgb)
        if header.oriented_by_pil:  # back to the stored pixels, which the next step orients
            tensor = orient(tensor, inverse_orientation(header.orientation))
    if rgb and tensor.dtype != torch.uint8:
        tensor = torch.from_numpy((tensor.numpy() >> 8).astype(np.uint8))
    if exif and header.orientation != 1:
        tensor = orient(tensor, header.orientation)
    return tensor


def header_size(path: PathLike, where: Where, *, exif: bool = True) -> tuple[int, int]:
    """``(height, width)`` from an image file's header, after EXIF orientation when ``exif``.

    Reads the first 4 KiB for PNG and JPEG (more only when the header runs on, as a large
    EXIF block makes it), else opens the file with PIL lazily; decodes no pixels.
    """
    try:
        header = _file_header(path)
        if header is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    header = pil_header(image, None)
    except (
        OSError,
        _NotAFile,
        NeedMoreBytes,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        error = read_error(where, path, "image", exc)
        if isinstance(error, ValueError) and "cannot decode" in str(error):
            why = why_unidentified(path) if isinstance(exc, UnidentifiedImageError) else exc
            error = ValueError(f"{where}: cannot read the header of image file '{path}': {why}")
        raise error from None
    return header.size(exif=exif)


def orientation_hint(path: PathLike) -> str:
    """A sentence on ``path``'s EXIF orientation when it swaps height and width, else ``""``."""
    try:
        header = _file_header(path)
    except (OSError, _NotAFile, NeedMoreBytes, ValueError):
        return ""
    if header is None or header.orientation < 5:
        return ""
    return (
        f" '{path}' has EXIF orientation {header.orientation}: stored {header.width}x"
        f"{header.height}, shown (and read by detkit) {header.height}x{header.width}; if the "
        "annotations were made on the stored pixels, pass apply_exif_orientation=False"
    )


def _file_header(path: PathLike) -> ImageHeader | None:
    """The PNG or JPEG header of the file ``path`` (``None`` for other formats)."""
    fd, _ = _open_regular(path)
    try:
        head = os.read(fd, _HEAD_BYTES)
        while True:
            try:
                return parse_header(head)
            except NeedMoreBytes:
                more = os.read(fd, 8 * max(len(head), 1))
                if not more:
                    raise
                head += more
    finally:
        os.close(fd)


def _check_header(
    header: ImageHeader,
    where: Where,
    path: PathLike,
    what: str,
    *,
    rgb: bool,
    max_pixels: int | None,
) -> None:
    pixels = header.width * header.height
    if max_pixels is not None and pixels > max_pixels:
        raise ValueError(
            f"{where}: {what} file '{path}' is {header.width}x{header.height} (WxH) = "
            f"{pixels:,} pixels, over the limit of {max_pixels:,} (max_image_pixels, a guard "
            "against decompression bombs); pass a larger max_image_pixels, or None for no limit"
        )
    if not rgb and header.lossy:
        raise ValueError(
            f"{where}: {what} file '{path}' is {header.format}, a lossy format: its compression "
            "artefacts change ids along object edges and make stray instances; save masks "
            "losslessly (PNG)"
        )


def _open_regular(path: PathLike) -> tuple[int, int]:
    """A descriptor of ``path`` opened for reading, and the file's size.

    Non-blocking, so that a FIFO given as an image is refused (``_NotAFile``) instead of
    waiting for a writer; so are devices and sockets.
    """
    fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotAFile
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def _read_bytes(path: PathLike, where: Where, what: str) -> np.ndarray:
    """The bytes of the regular file ``path``, as a uint8 array.

    Read with the OS's calls on a descriptor into uninitialized memory (a ``bytearray``
    would first be zeroed): right after a decode has evicted the caches, Python's file
    objects, or torchvision's reader and a tensor's ``.numpy()``, cost several times these
    few system calls.
    """
    try:
        fd, size = _open_regular(path)
        try:
            data = np.empty(size, dtype=np.uint8)
            view, done = data.data, 0
            while done < size:
                count = _readinto(fd, view[done:])
                if not count:
                    break
                done += count
        finally:
            os.close(fd)
    except (OSError, _NotAFile) as exc:
        raise read_error(where, path, what, exc) from None
    if done != size:
        raise ValueError(f"{where}: {what} file '{path}' changed size while being read")
    return data


def _readinto(fd: int, view: memoryview) -> int:
    """``os.readv`` where there is one (POSIX), else a raw file object's ``readinto``."""
    if _readv is not None:
        return _readv(fd, [view])
    with open(fd, "rb", buffering=0, closefd=False) as file:
        return file.readinto(view) or 0


def _open_with_pil(data: memoryview, where: Where, path: PathLike, what: str) -> Image.Image:
    with warnings.catch_warnings():
        # The pixel limit is checked next, from the header, with the dataset's own setting.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return open_lazily(data)
        except Image.DecompressionBombError as exc:
            raise ValueError(
                f"{where}: {what} file '{path}' exceeds PIL's pixel limit, which PIL applies "
                f"to this format by itself (raise PIL.Image.MAX_IMAGE_PIXELS): {exc}"
            ) from None
        except (OSError, SyntaxError) as exc:
            raise read_error(where, path, what, exc) from None


def _decode_with_pil(
    image: Image.Image, where: Where, path: PathLike, what: str, *, rgb: bool
) -> torch.Tensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise read_error(where, path, what, exc) from exc
    if not rgb:
        if image.mode not in ID_MASK_MODES:
            raise ValueError(
                f"{where}: {what} file '{path}' has PIL mode {image.mode!r}; an id mask must "
                f"have one integer channel (modes {', '.join(ID_MASK_MODES)})"
            )
        array = np.array(image)
        if not array.dtype.isnative:  # "I;16B"
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype == np.bool_:  # mode "1": Pillow's bools are bytes of 0 and 255
            array = array.astype(np.uint8)
        return torch.from_numpy(array)[None]
    if image.mode in _16_BIT_MODES:
        gray = (np.array(image).astype(np.uint16) >> 8).astype(np.uint8)
        return torch.from_numpy(gray)[None].expand(3, -1, -1).contiguous()
    if image.mode in ("I", "F"):
        raise ValueError(
            f"{where}: {what} file '{path}' has 32-bit PIL mode {image.mode!r}, whose range "
            "detkit cannot tell; save it as 8- or 16-bit"
        )
    rgb_image = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb_image)).permute(2, 0, 1)
