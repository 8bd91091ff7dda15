"""Decode and check uploaded images: bytes in memory -> an upright RGB picture, or an APIError."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, features

from errors import APIError

# Pillow warns above its pixel limit and refuses above twice it; we set its limit to ours on each
# decode (see _open). The warning is noise: our own check, from the header, answers with the size.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# A client's broken EXIF block is ignored (see _apply_orientation); Pillow's warning would be noise.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)

# Raster formats a client may send. Others Pillow could open (EPS, PSD, ...) are refused:
# less attack surface, and nothing a camera or a browser produces. Phone MPO files open as JPEG.
SUPPORTED_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
if features.check("avif"):
    SUPPORTED_FORMATS.append("AVIF")

SUPPORTED_NAMES = "JPEG, PNG, GIF, WebP, BMP, TIFF" + (", AVIF" if "AVIF" in SUPPORTED_FORMATS else "")

# A phone's multi-picture JPEG (MPO) is a JPEG with extra pictures appended: clients know it as JPEG.
JPEG_LIKE = {"MPO": "JPEG"}

# A 10000x10 strip would be upscaled to 256000x256 before the centre crop.
MAX_ASPECT_RATIO = 20


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, upright, possibly decoded at reduced scale (see decode_image)
    format: str
    width: int  # as uploaded, after EXIF orientation
    height: int


def _unsupported(message: str) -> APIError:
    return APIError(415, "unsupported_format", message)


HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}


def _sniff_unsupported(data: bytes) -> APIError | None:
    """Name formats people commonly send by mistake, so the error can say what to do."""
    head = data[:64].removeprefix(b"\xef\xbb\xbf").lstrip()  # an editor's UTF-8 byte-order mark
    brands = HEIF_BRANDS | (set() if "AVIF" in SUPPORTED_FORMATS else AVIF_BRANDS)  # only once Pillow has refused the bytes
    if data[4:8] == b"ftyp" and data[8:12] in brands:
        name = "AVIF" if data[8:12] in AVIF_BRANDS else "HEIC/HEIF"
        return _unsupported(f"{name} images are not supported here; convert to JPEG or PNG (supported: {SUPPORTED_NAMES}).")
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        return _unsupported(f"SVG is a vector format; send a raster image ({SUPPORTED_NAMES}).")
    if head.startswith(b"%PDF"):
        return _unsupported(f"PDF documents are not images; send a raster image ({SUPPORTED_NAMES}).")
    if data.startswith((b"II*\x00", b"MM\x00*")):  # a TIFF, but one Pillow has no mode for
        return _unsupported(
            "This TIFF's samples are not supported (for example floating-point or 32-bit colour, or more than "
            "4 channels), or the file is damaged; save it as an 8- or 16-bit TIFF, PNG or JPEG."
        )
    return _other_known_format(data)


# Formats people send that this service does not serve, by their first bytes: named without
# handing the bytes to more of Pillow's parsers.
OTHER_FORMATS = {
    b"\x00\x00\x01\x00": "ICO",
    b"8BPS": "PSD",
    b"%!PS": "PostScript/EPS",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000",
    b"\xff\x0a": "JPEG XL",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n": "JPEG XL",
    **{b"P%d%c" % (n, space): "PNM (PBM/PGM/PPM)" for n in range(1, 7) for space in b" \t\r\n"},
}


def _other_known_format(data: bytes) -> APIError | None:
    for magic, name in OTHER_FORMATS.items():
        if data.startswith(magic):
            return _unsupported(f"{name} images are not served here; send one of {SUPPORTED_NAMES}.")
    return None


_limit_lock = threading.Lock()
_limit_users: list[int] = []  # the limits of the decodes under way, in this process's threads
_limit_before: list[int | None] = []  # Pillow's own, put back when the last of them ends


@contextlib.contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own check must stay on: Image.open already allocates for some formats (a GIF's first
    frame) before our check can run. Tied to our limit while we decode, so that it never refuses
    what we serve; put back after, for any other code in the process. Decodes run in several
    threads at once (a batch), so the global is set by the first to start and put back by the last
    to end; meanwhile it is the largest of their limits."""
    with _limit_lock:
        if not _limit_users:
            _limit_before[:] = [Image.MAX_IMAGE_PIXELS]
        _limit_users.append(max_pixels)
        Image.MAX_IMAGE_PIXELS = max(_limit_users)
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users.remove(max_pixels)
            Image.MAX_IMAGE_PIXELS = max(_limit_users) if _limit_users else _limit_before[0]


def _too_large(size: str | None, max_pixels: int) -> APIError:
    found = f"{size}; " if size else ""
    return APIError(413, "image_too_large", f"The image has too many pixels ({found}the limit is {max_pixels:,}).")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as error:
        # Over twice the limit: Pillow says how many pixels; we have no width and height yet.
        found = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(f"{int(found.group(1)):,} pixels" if found else None, max_pixels) from None
    except Exception:
        raise _sniff_unsupported(data) or _damaged(data) or APIError(
            415, "invalid_image", f"The upload is not an image in a supported format ({SUPPORTED_NAMES})."
        ) from None


def _damaged(data: bytes) -> APIError | None:
    """A file that starts like a supported format but could not be opened: say it is damaged, not
    that it is no image (a PNG with a bad checksum, a header cut short)."""
    for fmt in SUPPORTED_FORMATS:
        accept = _signature_checks().get(fmt)
        if accept is not None and accept(data[:16]):
            return APIError(415, "invalid_image", f"The {fmt} image could not be read: it is truncated or corrupt.")
    return None


@functools.cache
def _signature_checks() -> dict[str, Callable[[bytes], Any]]:
    # Pillow's own test of each format's first bytes; gathered once, when first needed (Image.init
    # loads every plugin).
    Image.init()
    return {fmt: accept for fmt, (_, accept) in Image.OPEN.items() if accept is not None}


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _too_large(f"{width}x{height} pixels", max_pixels)
    if width < 1 or height < 1:
        raise APIError(415, "invalid_image", "The image has no pixels.")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise APIError(
            415,
            "unsupported_dimensions",
            f"The image is {width}x{height}; sides more than {MAX_ASPECT_RATIO} times apart are not classified.",
        )


def _draft(image: Image.Image, min_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the short side stays >= min_side."""
    width, height = image.size
    scale = min_side / min(width, height)
    if image.format in {"JPEG", "MPO"} and scale < 0.5:
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))


# Pixels converted at a time: a 100-megapixel 16-bit or transparent upload converted whole took
# 2.4-3.2 GB (float64 and RGBA copies of all of it); in strips, little more than the RGB result.
STRIP_PIXELS = 256 * 1024


def _strips(image: Image.Image) -> Iterator[tuple[int, Image.Image]]:
    """`image` a few rows at a time: each strip's top row, and the strip."""
    rows = max(1, STRIP_PIXELS // image.width)
    for top in range(0, image.height, rows):
        yield top, image.crop((0, top, image.width, min(image.height, top + rows)))


def _by_strips(image: Image.Image, convert: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """An RGB picture made strip by strip: `convert` takes a strip of `image`, returns it in RGB."""
    rgb = Image.new("RGB", image.size)
    for top, strip in _strips(image):
        rgb.paste(convert(strip), (0, top))
    return rgb


def _as_floats(strip: Image.Image) -> np.ndarray:
    return np.nan_to_num(np.asarray(strip, dtype=np.float64))


def _high_bit_depth_scale(image: Image.Image) -> float:
    if image.mode != "F":
        return 1 / 257  # 0..65535 -> 0..255
    # Floating-point pictures are usually 0..1; read as 0..255 they were black.
    return 255.0 if max(_as_floats(strip).max() for _, strip in _strips(image)) <= 1.0 else 1.0


def _to_8bit(strip: Image.Image, scale: float) -> Image.Image:
    # Pillow's convert("RGB") clips 16-bit values at 255 (a mostly white picture); scale instead.
    grey = Image.fromarray(np.clip(_as_floats(strip) * scale, 0, 255).round().astype(np.uint8), mode="L")
    return grey.convert("RGB")


def _over_white(strip: Image.Image) -> Image.Image:
    rgba = strip.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited over white, as a browser shows it."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I", "F"} or image.mode.startswith("I;16"):
        scale = _high_bit_depth_scale(image)
        return _by_strips(image, lambda strip: _to_8bit(strip, scale))
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (image.mode == "P" and "transparency" in image.info):
        return _by_strips(image, _over_white)
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int, min_side: int | None = None) -> DecodedImage:
    """Decode an upload held in memory. With min_side, JPEGs may decode at reduced scale."""
    if not data:
        raise APIError(400, "empty_file", "The uploaded file is empty.")
    with _pillow_limit(max_pixels):
        return _decode(data, max_pixels, min_side)


def pixels_to_decode(data: bytes, max_pixels: int, min_side: int | None = None) -> int:
    """How many pixels decode_image would produce, from the header alone (JPEGs at the scale they
    would be decoded at); 0 for what it cannot open or refuses for its size (over max_pixels)."""
    with contextlib.suppress(Exception), _pillow_limit(max_pixels):
        image = _open(data, max_pixels)
        if image.width * image.height > max_pixels:
            return 0
        if min_side:
            _draft(image, min_side)
        return image.width * image.height
    return 0


def _decode(data: bytes, max_pixels: int, min_side: int | None) -> DecodedImage:
    image = _open(data, max_pixels)
    width, height = image.size
    _check_dimensions(width, height, max_pixels)
    fmt = JPEG_LIKE.get(image.format or "", image.format) or "unknown"
    try:
        if min_side:
            _draft(image, min_side)
        image.seek(0)  # animated or multi-page: the first frame
        image.load()
    except Image.DecompressionBombError:  # a later frame or tile over the limit
        raise _too_large(None, max_pixels) from None
    except Exception:  # any decoder failure on client bytes is the client's broken file
        raise APIError(415, "invalid_image", f"The {fmt} image could not be decoded: it is truncated or corrupt.") from None
    decoded_size = image.size
    _apply_orientation(image)
    if image.size == decoded_size[::-1] != decoded_size:
        width, height = height, width  # turned a quarter by its EXIF orientation
    try:
        rgb = to_rgb(image)
    except Exception:
        raise APIError(415, "unsupported_format", f"Images in colour mode {image.mode} are not supported.") from None
    return DecodedImage(image=rgb, format=fmt, width=width, height=height)


def _apply_orientation(image: Image.Image) -> None:
    # Phones store pictures sideways and say so in EXIF; a broken EXIF block is ignored, not fatal.
    # In place: otherwise Pillow copies every picture that needs no turning.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)
