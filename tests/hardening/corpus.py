"""The bad-input corpus: every kind of upload a public endpoint meets, generated here.

Each case is one HTTP request and the answer it must get: a status and a stable error code (or 200
for odd but valid images the service supports). Cases with `wire` set are exact bytes on the
socket (chunked framing, lying Content-Length, oversized request line): real HTTP only.
The limits these cases assume are LIMITS, which the hardening tests' app and server use.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from PIL import Image, features

from tests.conftest import image_bytes
from tests.hardening.wire import request_head

MIB = 1024 * 1024
LIMITS = {"MAX_UPLOAD_MB": "1", "MAX_FILES": "4"}
MAX_BYTES = 1 * MIB
MAX_FILES = 4
BOUNDARY = "corpusBoundary7MA4YWxkTrZu0gW"


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str | None  # None: a 200 with predictions
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/classify"
    method: str = "POST"
    wire: bytes | None = None  # exact request bytes (without the API key); real HTTP only


@dataclass(frozen=True)
class Part:
    field: str
    content: bytes
    filename: str | None = "upload.jpg"
    content_type: str = "application/octet-stream"


def multipart(*parts: Part, boundary: str = BOUNDARY, terminator: bool = True) -> bytes:
    out = io.BytesIO()
    for part in parts:
        disposition = f'form-data; name="{part.field}"' + (f'; filename="{part.filename}"' if part.filename is not None else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {part.content_type}\r\n\r\n".encode())
        out.write(part.content + b"\r\n")
    if terminator:
        out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def form_case(
    name: str,
    status: int,
    code: str | None,
    *parts: Part,
    boundary_header: str | None = BOUNDARY,
    path: str = "/classify",
    body: bytes | None = None,
) -> Case:
    content_type = "multipart/form-data" + (f"; boundary={boundary_header}" if boundary_header else "")
    return Case(name, status, code, multipart(*parts) if body is None else body, {"Content-Type": content_type}, path)


def raw_case(
    name: str, status: int, code: str | None, body: bytes, content_type: str | None = "image/jpeg", path: str = "/classify"
) -> Case:
    return Case(name, status, code, body, {"Content-Type": content_type} if content_type else {}, path)


def encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def encode_oriented(image: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    """Encoded with an EXIF block, holding `orientation` (tag 0x0112) when given; JPEG at quality 95."""
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    return encode(image, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.effect_noise(size, 60).convert(mode)


def corrupt_png_chunk() -> bytes:
    """A PNG whose IDAT data has one byte flipped: its CRC no longer matches."""
    data = bytearray(encode(noise((64, 48)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10] ^= 0xFF
    return bytes(data)


def gif_with_huge_screen() -> bytes:
    """A 1x1 GIF whose header declares a 65535x65535 logical screen (4.3 billion pixels)."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def png_bomb() -> bytes:
    """A small PNG declaring 30000x30000 pixels: zlib packs 900 million zero bits into kilobytes."""
    return image_bytes("1", (30000, 30000), "PNG")


def gif_bomb(side: int = 65535) -> bytes:
    """43 bytes: a GIF whose first frame is side x side, disposed to the background. Opening it makes
    Pillow allocate that frame (4 GB at 65535) unless its own pixel limit stops it first."""
    screen = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    disposal = b"\x21\xf9\x04" + bytes([2 << 2]) + b"\x00\x00\x00\x00"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x4c\x01\x00"
    return screen + disposal + frame + b"\x3b"


def palette_with_transparency() -> bytes:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    return encode(image, "PNG", transparency=0)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    pages = [noise((40, 30)) for _ in range(3)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def jpeg_with_broken_exif(photo: bytes) -> bytes:
    return encode(Image.open(io.BytesIO(photo)), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage")


def avif_case() -> Case:
    if features.check("avif"):
        return raw_case("avif image (supported by this Pillow)", 200, None, encode(noise((48, 32)), "AVIF"), "image/avif")
    return raw_case(
        "avif image (unsupported here)", 415, "unsupported_format", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "image/avif"
    )


def cases(photo: bytes) -> list[Case]:
    """Every case, through the test client and over real HTTP; `photo` is a real JPEG."""
    png = image_bytes("RGB", (64, 48), "PNG")
    jpeg = Part("image", photo, "photo.jpg", "image/jpeg")
    too_big = noise((700, 600))  # ~1.2 MB as BMP: over the 1 MiB limit
    return [
        # empty and missing
        Case("empty body, no content type", 400, "missing_image"),
        raw_case("empty raw body", 400, "missing_image", b""),
        form_case("zero-byte file", 400, "empty_file", Part("image", b"", "empty.jpg")),
        form_case("wrong field name", 400, "missing_image", Part("photo", photo, "a.jpg")),
        form_case("image sent as a text field", 400, "missing_image", Part("image", b"hello", None, "text/plain")),
        # not images, or broken ones
        form_case("text named .jpg", 415, "invalid_image", Part("image", b"this is just some text\n" * 20, "notes.jpg")),
        form_case(
            "PDF named .jpg", 415, "unsupported_format", Part("image", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "doc.jpg")
        ),
        raw_case("random bytes", 415, "invalid_image", bytes(range(256)) * 8),
        raw_case("truncated JPEG", 415, "invalid_image", photo[: len(photo) // 3]),
        raw_case("JPEG header only", 415, "invalid_image", photo[:200]),
        raw_case("corrupt PNG chunk", 415, "invalid_image", corrupt_png_chunk(), "image/png"),
        raw_case(
            "SVG",
            415,
            "unsupported_format",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            "image/svg+xml",
        ),
        raw_case("HEIC", 415, "unsupported_format", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200), "image/heic"),
        avif_case(),
        # sizes
        raw_case("decompression bomb PNG 30000x30000", 413, "image_too_large", png_bomb(), "image/png"),
        raw_case("decompression bomb GIF 65535x65535 in 43 bytes", 413, "image_too_large", gif_bomb(), "image/gif"),
        raw_case("GIF declaring 65535x65535", 413, "image_too_large", gif_with_huge_screen(), "image/gif"),
        raw_case("10000x10 strip", 415, "unsupported_dimensions", image_bytes("L", (10000, 10), "PNG"), "image/png"),
        raw_case("1x1 image", 200, None, image_bytes("RGB", (1, 1), "PNG"), "image/png"),
        raw_case("body over the limit (Content-Length)", 413, "payload_too_large", encode(too_big, "BMP"), "image/bmp"),
        form_case("multipart over the limit", 413, "payload_too_large", Part("image", encode(too_big, "BMP"), "big.bmp")),
        form_case("more files than MAX_FILES", 413, "too_many_files", *[Part("image", png, f"{i}.png") for i in range(MAX_FILES + 1)]),
        form_case(
            "1200 form fields (over MAX_FORM_PARTS)",
            413,
            "payload_too_large",
            *[Part(f"f{i}", b"x", None, "text/plain") for i in range(1200)],
        ),
        # odd but valid images: served, as the README says
        raw_case("CMYK JPEG", 200, None, encode(noise((48, 32), "CMYK"), "JPEG")),
        raw_case("16-bit PNG", 200, None, image_bytes("I;16", (48, 32), "PNG", color=30000), "image/png"),
        raw_case("palette PNG with transparency", 200, None, palette_with_transparency(), "image/png"),
        raw_case("animated GIF", 200, None, animated("GIF"), "image/gif"),
        raw_case("animated WebP", 200, None, animated("WEBP"), "image/webp"),
        raw_case("multi-page TIFF", 200, None, multipage_tiff(), "image/tiff"),
        raw_case("JPEG with a broken EXIF block", 200, None, jpeg_with_broken_exif(photo)),
        raw_case("PNG sent as image/jpeg", 200, None, png),
        # topk
        *[
            form_case(f"topk={value}", 400, "invalid_topk", jpeg, path=f"/classify?topk={value}")
            for value in ("0", "-1", str(10**9), "abc", "9" * 100)
        ],
        form_case("topk form field 1e3", 400, "invalid_topk", jpeg, Part("topk", b"1e3", None, "text/plain")),
        # content types
        raw_case("Content-Type application/json", 415, "unsupported_media_type", b'{"image": "..."}', "application/json"),
        raw_case("Content-Type text/plain", 415, "unsupported_media_type", b"hello", "text/plain"),
        raw_case("urlencoded form", 415, "unsupported_media_type", b"image=abc", "application/x-www-form-urlencoded"),
        # malformed multipart
        form_case("multipart without a boundary", 400, "malformed_multipart", jpeg, boundary_header=None),
        form_case("multipart with the wrong boundary", 400, "malformed_multipart", jpeg, boundary_header="notTheBoundary"),
        form_case("multipart missing its terminator", 400, "malformed_multipart", body=multipart(jpeg, terminator=False)),
        form_case("multipart that is garbage", 400, "malformed_multipart", body=b"hello, this is not multipart"),
        form_case(
            "multipart part without headers", 400, "malformed_multipart", body=f"--{BOUNDARY}\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode()
        ),
        # file names
        form_case("very long filename", 200, None, Part("image", png, "a" * 10_000 + ".png")),
        form_case("filename with odd characters", 200, None, Part("image", png, "../../etc/passwd ü😀 \\ ; x.png")),
        # routes and methods
        Case("GET /classify", 405, "method_not_allowed", method="GET"),
        Case("unknown path", 404, "not_found", path="/classify/../../etc/passwd"),
        # framing the app cannot see: exact bytes on the wire
        wire_case("chunked body over the limit", 413, "payload_too_large", "image/jpeg", chunked(b"\xff" * (MAX_BYTES + 100_000))),
        wire_case(
            "chunked multipart over the limit",
            413,
            "payload_too_large",
            f"multipart/form-data; boundary={BOUNDARY}",
            chunked(multipart(Part("image", b"\xff" * (MAX_BYTES + 100_000)))),
        ),
        wire_case("chunked with a bad chunk size", 400, "malformed_body", "image/png", b"zz\r\nabc\r\n0\r\n\r\n"),
        wire_case("chunked missing the chunk terminator", 400, "malformed_body", "image/png", b"5\r\nabcdeXX3\r\nabc\r\n0\r\n\r\n"),
        Case("Content-Length not a number", 400, "bad_request", wire=request_head("image/png", "Content-Length: abc") + png),
        Case("request line over 4094 bytes", 414, "uri_too_long", wire=b"POST /classify?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        Case("header over 8190 bytes", 431, "header_fields_too_large", wire=request_head("image/png", "X-Big: " + "b" * 9000)),
    ]


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def wire_case(name: str, status: int, code: str, content_type: str, chunked_body: bytes) -> Case:
    return Case(name, status, code, wire=request_head(content_type, "Transfer-Encoding: chunked") + chunked_body)


def short_body_request(body: bytes) -> bytes:
    """A request announcing 1000 bytes more than it sends; the client then half-closes."""
    return request_head("image/png", f"Content-Length: {len(body) + 1000}") + body
