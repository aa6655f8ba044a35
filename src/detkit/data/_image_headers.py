"""What an image file's header says: format, stored size, EXIF orientation, lossy or not.

PNG and JPEG headers are parsed here from bytes (a few microseconds, no pixel decode), so
that size checks and the pixel limit apply before anything is decoded and so that
``get_height_and_width`` and the decoded image agree by construction; other formats ask PIL,
which opens them lazily.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_EXIF_ORIENTATION = 0x0112
# Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (C4, C8 and CC are other segments).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
# What each marker that is not skipped means to the header's walk (one lookup a segment: the
# walk runs right after a decode has evicted the caches, where each line costs ~1 us).
_JPEG_ROLES = {
    0xFF: "fill",
    **dict.fromkeys(_JPEG_STANDALONE, "standalone"),
    **dict.fromkeys(_JPEG_SOF, "frame"),
    0xDA: "end",
    0xD9: "end",
    0xE1: "exif",
}
_PNG_IHDR = struct.Struct(">4sIIBB")  # "IHDR", width, height, bit depth, colour type
_PNG_CHUNK = struct.Struct(">I4s")  # a chunk's length and type
_PNG_CRC = struct.Struct(">I")  # the CRC after a chunk's data
_JPEG_MARKER = struct.Struct(">BBH")  # 0xFF, marker, segment length (absent for some)
_JPEG_SIZE = struct.Struct(">HH")  # a frame header's height and width
# PIL formats whose pixels went through a lossy codec (WebP is checked from its chunks;
# AVIF, AV1 stills, is lossy but for settings PIL does not write).
_LOSSY_PIL_FORMATS = frozenset({"JPEG", "MPO", "AVIF"})
_LOSSY_TIFF_COMPRESSION = frozenset({"jpeg", "tiff_jpeg", "webp"})


class NeedMoreBytes(Exception):
    """The header does not end within the bytes given: read more of the file."""

    def __init__(self) -> None:
        super().__init__("the file ends inside its header")


class ImageHeader(NamedTuple):
    """An image file's header (a named tuple: a frozen dataclass costs ~10 us more to make
    right after a decode, on the dataset's hot path).

    Attributes:
        format: ``"PNG"``, ``"JPEG"``, or PIL's name of another format.
        height: stored height in pixels (before EXIF orientation).
        width: stored width in pixels.
        orientation: EXIF orientation ``1..8`` (``1``: shown as stored; ``5..8`` swap
            height and width); ``1`` when absent or invalid, as PIL's ``exif_transpose``.
        lossy: whether the pixels went through a lossy codec (JPEG, lossy WebP, AVIF).
        low_bit_png: a PNG of 1, 2 or 4 bits a sample (torchvision unpacks their rows
            wrongly or scales their values).
        oriented_by_pil: PIL applies ``orientation`` itself when it loads the pixels (TIFF,
            in recent Pillow versions), so they come from it as shown, not as stored.
    """

    format: str
    height: int
    width: int
    orientation: int = 1
    lossy: bool = False
    low_bit_png: bool = False
    oriented_by_pil: bool = False

    def size(self, *, exif: bool) -> tuple[int, int]:
        """``(height, width)`` as shown: after EXIF orientation when ``exif``."""
        if exif and self.orientation >= 5:
            return self.width, self.height
        return self.height, self.width


def parse_header(data: bytes | bytearray | memoryview) -> ImageHeader | None:
    """The header of a PNG or JPEG file starting at ``data``; ``None`` for other formats.

    Raises:
        NeedMoreBytes: when ``data`` ends before the header does.
        ValueError: for a PNG or JPEG signature followed by a malformed header.
    """
    if data[:8] == PNG_SIGNATURE:
        return _png_header(data)
    if data[:2] == _JPEG_SOI:
        return _jpeg_header(data)
    return None


def pil_header(image: Image.Image, data: bytes | bytearray | memoryview | None) -> ImageHeader:
    """The header of a file PIL has opened (lazily: no pixels decoded).

    ``data`` (the file's bytes, when at hand) tells lossy WebP from lossless.
    """
    fmt = image.format or "unknown"
    compression = str(image.info.get("compression", "")).lower()
    lossy = fmt in _LOSSY_PIL_FORMATS or compression in _LOSSY_TIFF_COMPRESSION
    if fmt == "WEBP":
        lossy = data is None or _webp_is_lossy(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about odd EXIF blocks; they read as none
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block means no orientation, as in PIL
            orientation = 1
    width, height = image.size
    orientation = _valid_orientation(orientation)
    by_pil = fmt == "TIFF" and orientation != 1 and _pil_orients_tiff()
    if by_pil and orientation >= 5:  # PIL gives the size as shown: the stored one is swapped
        width, height = height, width
    return ImageHeader(fmt, height, width, orientation, lossy, oriented_by_pil=by_pil)


@functools.cache
def _pil_orients_tiff() -> bool:
    """Whether this Pillow orients TIFF files by their Orientation tag itself (Pillow 13
    does, on open for the size and on load for the pixels; older versions did not)."""
    image = Image.new("L", (2, 1))
    exif = image.getexif()
    exif[_EXIF_ORIENTATION] = 6
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", exif=exif)
    return Image.open(buffer).size == (1, 2)


def open_lazily(data: bytes | bytearray | memoryview) -> Image.Image:
    """PIL's lazy ``Image.open`` on in-memory bytes."""
    return Image.open(io.BytesIO(data))


def png_problem(data: bytes | bytearray | memoryview) -> str | None:
    """What is corrupt in a PNG file's chunks, or ``None`` (also for a file that is no PNG).

    Checks every chunk's CRC, that the chunks end with ``IEND``, and that the image data
    inflates: torchvision's PNG decoder crashes the process (a segmentation fault) on a file
    whose image data is corrupt. Reads and inflates every byte, so it is for audits; reads
    check the image data's CRCs alone (:func:`png_data_crc_error`).
    """
    view = memoryview(data).cast("B")
    if view[:8] != PNG_SIGNATURE:
        return None
    image_data = zlib.decompressobj()
    for pos, kind, typed, crc in _png_chunks(view):
        name = kind.decode("latin-1")
        if crc is None:
            return f"chunk {name} at byte {pos} runs past the end of the file (truncated?)"
        if zlib.crc32(typed) != crc:
            return f"CRC error in chunk {name} at byte {pos}"
        if kind == b"IDAT":
            try:  # inflated in bounded pieces, kept nowhere
                image_data.decompress(typed[4:], 1 << 20)
                while image_data.unconsumed_tail:
                    image_data.decompress(image_data.unconsumed_tail, 1 << 20)
            except zlib.error as exc:
                return f"its image data does not inflate ({exc})"
        if kind == b"IEND":
            return None if image_data.eof else "its image data ends before its last row"
    return "no IEND chunk (truncated?)"


def png_data_crc_error(data: bytes | bytearray | memoryview) -> str | None:
    """The first image data (``IDAT``) chunk of a PNG whose CRC does not match its bytes,
    described, or ``None``.

    torchvision's PNG decoder crashes the process (a segmentation fault, naming no file) on
    image data that does not inflate, and a damaged byte (a bad disk, an interrupted copy
    over an old file) breaks the chunk's CRC: this finds it first, for about 1% of a PNG
    decode. A file that ends mid-chunk is left to the decoders, which report it.
    """
    # A loop of its own, not _png_chunks: it runs on every PNG read, where a generator's
    # frames cost more than the CRC of a small mask.
    crc32, chunk, stored = zlib.crc32, _PNG_CHUNK.unpack_from, _PNG_CRC.unpack_from
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length, kind = chunk(data, pos)
        stop = pos + 8 + length
        if stop + 4 > end or kind == b"IEND":
            break
        if kind == b"IDAT" and crc32(data[pos + 4 : stop]) != stored(data, stop)[0]:
            return f"CRC error in its image data (chunk IDAT at byte {pos})"
        pos = stop + 4
    return None


def _png_chunks(
    data: bytes | bytearray | memoryview,
) -> Iterator[tuple[int, bytes, memoryview | bytes | bytearray, int | None]]:
    """``(position, type, type and data, stored CRC)`` of each chunk of a PNG, up to ``IEND``;
    the stored CRC is ``None`` for a chunk the file ends in (and the walk stops there)."""
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length, kind = _PNG_CHUNK.unpack_from(data, pos)
        stop = pos + 8 + length
        if stop + 4 > end:
            yield pos, kind, data[pos + 4 : min(stop, end)], None
            return
        yield pos, kind, data[pos + 4 : stop], _PNG_CRC.unpack_from(data, stop)[0]
        if kind == b"IEND":
            return
        pos = stop + 4


def _valid_orientation(value: Any) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_header(data: bytes | bytearray | memoryview) -> ImageHeader:
    if len(data) < 33:
        raise NeedMoreBytes
    kind, width, height, bit_depth, color_type = _PNG_IHDR.unpack_from(data, 12)
    if kind != b"IHDR":
        raise ValueError("PNG file without an IHDR chunk")
    # eXIf counts only before the image data, where decoders and viewers look for it.
    orientation, pos = 1, 8
    while True:
        if pos + 8 > len(data):
            raise NeedMoreBytes
        length, kind = _PNG_CHUNK.unpack_from(data, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            if pos + 8 + length > len(data):
                raise NeedMoreBytes
            orientation = _tiff_orientation(data[pos + 8 : pos + 8 + length])
            break
        pos += 12 + length
    return ImageHeader(
        "PNG", height, width, orientation, low_bit_png=bit_depth < 8 and color_type in (0, 3)
    )


def _jpeg_header(data: bytes | bytearray | memoryview) -> ImageHeader:
    orientation, pos, end = None, 2, len(data)
    while True:
        if pos + 4 > end:
            raise NeedMoreBytes
        fill, marker, length = _JPEG_MARKER.unpack_from(data, pos)
        if fill != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        role = _JPEG_ROLES.get(marker)
        if role is None:  # a segment that says nothing here: skip it (most loops end here)
            pos += 2 + length
        elif role == "fill":  # a fill byte before a marker
            pos += 1
        elif role == "standalone":
            pos += 2
        elif role == "frame":
            if pos + 9 > end:
                raise NeedMoreBytes
            height, width = _JPEG_SIZE.unpack_from(data, pos + 5)
            if not height or not width:
                raise ValueError(f"JPEG frame header gives a size of {width}x{height} (WxH)")
            lossy = marker not in _JPEG_LOSSLESS_SOF
            return ImageHeader("JPEG", height, width, orientation or 1, lossy)
        elif role == "end":  # start of scan or end of image: no frame header
            raise ValueError("JPEG file without a frame header (no size)")
        else:  # APP1: the first Exif block counts, as in PIL
            if orientation is None:
                if pos + 2 + length > end:
                    raise NeedMoreBytes
                segment = data[pos + 4 : pos + 2 + length]
                if segment[:6] == b"Exif\x00\x00":
                    orientation = _tiff_orientation(segment[6:])
            pos += 2 + length


def _tiff_orientation(tiff: bytes | bytearray | memoryview) -> int:
    """The Orientation tag of a TIFF-structured EXIF block's first IFD; 1 when absent."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], order), 12):
        if entry + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[entry : entry + 2], order) == _EXIF_ORIENTATION:
            if int.from_bytes(tiff[entry + 2 : entry + 4], order) != 3:  # not a SHORT
                return 1
            return _valid_orientation(int.from_bytes(tiff[entry + 8 : entry + 10], order))
    return 1


def _webp_is_lossy(data: bytes | bytearray | memoryview) -> bool:
    """Whether a WebP file's image chunk is ``VP8`` (lossy) rather than ``VP8L``."""
    pos = 12
    while pos + 8 <= len(data):
        kind = bytes(data[pos : pos + 4])
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8 "
        if kind == b"ANMF":  # animation frame: its image chunk follows 16 bytes of frame data
            pos += 24
            continue
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return True  # no image chunk found: assume the worst for a mask
