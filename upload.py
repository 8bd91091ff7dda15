"""Parse an upload request: which images were sent (multipart or raw body), and topk."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import IO

from flask import Request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from errors import APIError

IMAGE_FIELDS = ("image", "file")  # "file" is the name most tutorials use
RAW_TYPES = ("application/octet-stream",)  # plus every image/* type

MULTIPART_HINT = (
    "the Content-Type needs a boundary parameter that matches the body's --boundary lines, "
    "and the body must end with --boundary--."
)

HOW_TO_SEND = (
    "Send the image as multipart/form-data in the field 'image' (curl -F image=@photo.jpg), "
    "or as the raw body with an image Content-Type (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg')."
)


class InMemoryRequest(Request):
    """Uploads stay in memory, bounded by MAX_CONTENT_LENGTH; werkzeug would spill them to temp files."""

    def _get_file_stream(
        self, total_content_length: int | None, content_type: str | None, filename: str | None = None, content_length: int | None = None
    ) -> IO[bytes]:
        stream = io.BytesIO()
        self.file_streams.append(stream)
        return stream

    @cached_property
    def file_streams(self) -> list[IO[bytes]]:
        """Each file part's stream, in the order the parts came: request.files groups them by field name."""
        return []

    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        parser.silent = False  # werkzeug would read a broken body as an empty form: "no image" misleads
        return parser

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except UnicodeDecodeError:  # werkzeug reads part headers as UTF-8 only
            message = "A part's headers (its field name or filename) are not UTF-8 text: name the file in UTF-8 or ASCII."
            raise APIError(400, "malformed_multipart", message) from None
        except ValueError:
            raise APIError(400, "malformed_multipart", f"The multipart body could not be read: {MULTIPART_HINT}") from None
        except RequestEntityTooLarge:
            if self.content_length is None or (self.max_content_length is not None and self.content_length > self.max_content_length):
                raise  # the body itself is too large (or, streamed, may be): errors.py says so, with the limit
            # A body within the limit: werkzeug counted the form's parts or its text fields.
            raise APIError(
                413,
                "payload_too_large",
                f"The form has more than {self.max_form_parts} parts, or more than {self.max_form_memory_size:,} bytes "
                "in a text field. Send the images as files, in the field 'image'.",
            ) from None


@dataclass
class Upload:
    filename: str | None
    data: bytes


def _files_in_order_sent(request: Request) -> list[tuple[str, FileStorage]]:
    position = {id(stream): n for n, stream in enumerate(getattr(request, "file_streams", []))}
    return sorted(request.files.items(multi=True), key=lambda item: position.get(id(item[1].stream), 0))


def _multipart_uploads(request: Request) -> list[Upload]:
    uploads = []
    for field, storage in _files_in_order_sent(request):
        if field not in IMAGE_FIELDS:
            continue
        data = storage.read()
        if not data and not storage.filename:
            continue  # a browser form's file input left empty
        uploads.append(Upload(storage.filename or None, data))
    if not uploads:
        raise _no_image(request)
    # Rather than classify some of what was sent and say nothing of the rest:
    if ignored := [field for field, storage in request.files.items(multi=True) if field not in IMAGE_FIELDS and storage.filename]:
        raise APIError(400, "unexpected_field", f"Files were also sent in {_field_list(ignored)}, which are not read. {HOW_TO_SEND}")
    if as_text := [field for field in IMAGE_FIELDS if any(request.form.getlist(field))]:
        raise APIError(
            400,
            "unexpected_field",
            f"The field '{as_text[0]}' also arrived as text, not as a file (its part has no filename), and is not read. "
            + _send_as_file(as_text[0]),
        )
    return uploads


def _send_as_file(field: str) -> str:
    return (
        f"With curl, use -F {field}=@photo.jpg: an @ before the path, not <, and not --form-string (which sends text). "
        "From code, give the part a filename; in Postman, switch the row's type to File."
    )


def _no_image(request: Request) -> APIError:
    """What to say to a form with no image in it: what it had instead."""
    if as_text := [field for field in IMAGE_FIELDS if field in request.form]:
        return APIError(
            400,
            "missing_image",
            f"The field '{as_text[0]}' arrived as text, not as a file (its part has no filename). " + _send_as_file(as_text[0]),
        )
    fields = [*request.files, *request.form]
    got = f" The request had {_field_list(fields)}." if fields else " The request had no file in it."
    return APIError(400, "missing_image", f"No image was uploaded.{got} {HOW_TO_SEND}")


def _field_list(fields: Iterable[str | None], most: int = 5, longest: int = 40) -> str:
    """Field names for a message: the client's text, so bounded in count and length."""
    names = sorted({field or "" for field in fields})  # a part may have no name at all (curl -F =@photo.jpg)
    shown = ", ".join(repr(name if len(name) <= longest else name[:longest] + "...") for name in names[:most])
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"the field{'s' if len(names) > 1 else ''} {shown}{more}"


def _looks_like_multipart(data: bytes) -> bool:
    # curl -F writes its parts as "attachment" when told the Content-Type is not multipart/form-data.
    return data.startswith(b"--") and re.search(rb"content-disposition: *(form-data|attachment)", data[:1024].lower()) is not None


def _raw_upload(request: Request) -> Upload:
    data = request.get_data(cache=False)
    if not data:
        raise APIError(400, "missing_image", f"The request body is empty. {HOW_TO_SEND}")
    if _looks_like_multipart(data):  # curl -F with -H 'Content-Type: image/jpeg': the header hides the form
        raise APIError(
            400,
            "malformed_multipart",
            f"The body is multipart/form-data, but the Content-Type says {request.mimetype}. "
            "With curl -F, do not set Content-Type: curl sets multipart/form-data with its boundary.",
        )
    _, options = parse_options_header(_as_sent(request.headers.get("Content-Disposition", "")))
    return Upload(options.get("filename"), data)


def _as_sent(header: str) -> str:
    """A header's text as the client wrote it: WSGI gives each byte as a latin-1 character, and
    clients write names in UTF-8 (multipart part headers are read as UTF-8 already)."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def _codings(request: Request, header: str) -> list[str]:
    return [coding.strip().lower() for coding in request.headers.get(header, "").split(",") if coding.strip()]


def refuse_encoded_body(request: Request) -> None:
    """A body sent compressed (Content-Encoding: gzip, ...) is refused, not read as a broken image;
    so is one in a transfer coding other than chunked, which gunicorn hands over undecoded."""
    if any(coding != "identity" for coding in _codings(request, "Content-Encoding")):
        raise APIError(
            415,
            "unsupported_media_type",
            f"Content-Encoding {request.headers['Content-Encoding'][:40]!r} is not accepted: send the bytes as they are "
            "(images are compressed already).",
        )
    if any(coding not in {"chunked", "identity"} for coding in _codings(request, "Transfer-Encoding")):
        raise APIError(
            501,
            "not_implemented",
            f"Transfer-Encoding {request.headers['Transfer-Encoding'][:40]!r} is not supported: send the body as it is, "
            "or chunked alone.",
        )


def read_uploads(request: Request, max_files: int) -> list[Upload]:
    """The uploaded images in the order sent, or an APIError saying what was wrong."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        uploads = _multipart_uploads(request)
    elif mimetype.startswith("image/") or mimetype in RAW_TYPES:
        uploads = [_raw_upload(request)]
    elif not mimetype and not request.content_length:
        raise APIError(400, "missing_image", f"The request has no body. {HOW_TO_SEND}")
    else:
        raise APIError(415, "unsupported_media_type", f"Content-Type {mimetype or '(none)'} is not accepted here. {HOW_TO_SEND}")
    if len(uploads) > max_files:
        raise APIError(413, "too_many_files", f"{len(uploads)} files were sent; at most {max_files} are classified per request.")
    return uploads


def read_topk(request: Request, default: int, maximum: int) -> int:
    """topk from the query string or a form field; a whole number from 1 to the number of classes."""
    raw = request.args.get("topk")
    if raw is None and request.mimetype == "multipart/form-data":
        raw = request.form.get("topk")
    if raw is None or raw.strip() == "":
        return min(default, maximum)
    text = raw.strip()
    topk = int(text) if text.isascii() and text.isdigit() and len(text) <= 7 else 0
    if not 1 <= topk <= maximum:
        raise APIError(400, "invalid_topk", f"topk must be a whole number from 1 to {maximum}; got {raw[:20]!r}.")
    return topk
