"""The OpenAPI 3 document served at /openapi.json, with this server's limits filled in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import api_keys
from images import SUPPORTED_FORMATS, SUPPORTED_NAMES
from model import Classifier
from settings import MIB

OPENAPI_VERSION = "3.0.3"  # 3.0 rather than 3.1: Swagger UI, Postman's importer and most generators handle its file uploads
API_VERSION = "1.0.0"

ERROR_CODES = {
    400: (
        "`missing_image`, `unexpected_field`, `empty_file`, `invalid_topk`, `malformed_multipart`, `malformed_body`, "
        "`incomplete_body`, `bad_request`"
    ),
    401: "`unauthorized` (the `WWW-Authenticate` header says whether the key was missing or wrong)",
    404: "`not_found`",
    405: "`method_not_allowed` (the `Allow` header lists the methods that are)",
    408: "`header_timeout`, `upload_timeout`",
    413: "`payload_too_large`, `image_too_large`, `too_many_files`, `too_many_pixels`",
    415: "`unsupported_media_type`, `invalid_image`, `unsupported_format`, `unsupported_dimensions`",
    500: "`internal_error`",
    501: "`not_implemented`",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **examples: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"description": description, "content": {"application/json": content}}


def _error(status: int, when: str) -> dict[str, Any]:
    return _json(_ref("Error"), f"{when} Codes: {ERROR_CODES[status]}.")


PREDICTIONS_EXAMPLE = [
    {"label": "Samoyed", "index": 258, "probability": 0.873112},
    {"label": "white wolf", "index": 270, "probability": 0.041007},
]
SINGLE_EXAMPLE = {
    "filename": "dog.jpg",
    "predictions": PREDICTIONS_EXAMPLE,
    "image": {"width": 500, "height": 375, "format": "JPEG"},
    "model": "resnet18",
    "timing_ms": {"decode": 3.1, "model": 29.4, "total": 32.6},
}
BATCH_EXAMPLE = {
    "results": [
        {"filename": "dog.jpg", "predictions": PREDICTIONS_EXAMPLE, "image": {"width": 500, "height": 375, "format": "JPEG"}},
        {"filename": "notes.txt", "error": {"code": "invalid_image", "message": "The upload is not an image in a supported format (...)."}},
    ],
    "model": "resnet18",
    "timing_ms": {"decode": 5.0, "model": 41.2, "total": 46.3},
}


def _schemas() -> dict[str, Any]:
    timing = {
        "type": "object",
        "description": "Milliseconds spent decoding and preparing the images (resize, crop, normalise), in the forward pass, and in all.",
        "required": ["decode", "model", "total"],
        "properties": {name: {"type": "number"} for name in ("decode", "model", "total")},
    }
    filename = {"type": "string", "nullable": True, "description": "As uploaded; null for a raw body without Content-Disposition."}
    return {
        "Prediction": {
            "type": "object",
            "required": ["label", "index", "probability"],
            "properties": {
                "label": {"type": "string", "example": "Samoyed"},
                "index": {"type": "integer", "minimum": 0, "description": "The class's line in the labels file, from 0."},
                "probability": {"type": "number", "minimum": 0, "maximum": 1, "description": "Softmax over all classes."},
            },
        },
        "ImageInfo": {
            "type": "object",
            "description": "The image as uploaded, after EXIF orientation.",
            "required": ["width", "height", "format"],
            "properties": {
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "format": {
                    "type": "string",
                    "enum": SUPPORTED_FORMATS,
                    "description": "The format decoded; a phone's multi-picture JPEG (MPO) is JPEG.",
                },
            },
        },
        "Timing": timing,
        "FileClassified": {
            "type": "object",
            "required": ["filename", "predictions", "image"],
            "properties": {
                "filename": filename,
                "predictions": {"type": "array", "items": _ref("Prediction"), "description": "Highest probability first."},
                "image": _ref("ImageInfo"),
            },
        },
        "FileFailed": {
            "type": "object",
            "description": "A file among several that could not be classified; the others still were.",
            "required": ["filename", "error"],
            "properties": {"filename": filename, "error": _ref("ErrorDetail")},
        },
        "Classification": {
            "description": "The answer for one image.",
            "allOf": [
                _ref("FileClassified"),
                {
                    "type": "object",
                    "required": ["model", "timing_ms"],
                    "properties": {"model": {"type": "string"}, "timing_ms": _ref("Timing")},
                },
            ],
        },
        "BatchClassification": {
            "type": "object",
            "description": "The answer for several images: one entry per file, in upload order.",
            "required": ["results", "model", "timing_ms"],
            "properties": {
                "results": {"type": "array", "items": {"oneOf": [_ref("FileClassified"), _ref("FileFailed")]}},
                "model": {"type": "string"},
                "timing_ms": _ref("Timing"),
            },
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine name of the error.", "example": "invalid_topk"},
                "message": {"type": "string", "description": "What went wrong and what to send instead, for people."},
            },
        },
        "Error": {
            "type": "object",
            "description": "Every error, on every path. When several files were sent and all failed, the status and "
            "`error` are the first file's, and `results` has every file's entry.",
            "required": ["error"],
            "properties": {
                "error": _ref("ErrorDetail"),
                "results": {"type": "array", "items": {"oneOf": [_ref("FileClassified"), _ref("FileFailed")]}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "model"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}, "model": {"type": "string"}},
        },
        "ModelInfo": {
            "type": "object",
            "required": ["name", "architecture", "weights", "num_classes", "input_shape", "preprocessing", "precision", "limits"],
            "properties": {
                "name": {"type": "string"},
                "architecture": {"type": "string"},
                "weights": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "nullable": True},
                        "sha256": {"type": "string", "nullable": True},
                        "source": {"type": "string"},
                    },
                },
                "num_classes": {"type": "integer"},
                "input_shape": {"type": "array", "items": {"type": "integer"}},
                "preprocessing": {"type": "object", "additionalProperties": True},
                "precision": {"type": "string", "enum": ["fp32", "bf16"]},
                "torch": {"type": "string"},
                "torchvision": {"type": "string"},
                "threads": {
                    "type": "object",
                    "description": "Torch threads per request: fixed (`per_request`), or adaptive under gunicorn: "
                    "`lone_request` when no other worker is busy, `all_workers_busy` when all are.",
                    "required": ["adaptive"],
                    "properties": {
                        "adaptive": {"type": "boolean"},
                        "per_request": {"type": "integer"},
                        "lone_request": {"type": "integer"},
                        "all_workers_busy": {"type": "integer"},
                    },
                },
                "limits": {
                    "type": "object",
                    "properties": {
                        name: {"type": "integer"}
                        for name in ("max_upload_bytes", "max_image_pixels", "max_request_pixels", "max_files", "default_topk")
                    },
                },
            },
        },
    }


def _classify(config: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    topk = {"type": "integer", "minimum": 1, "maximum": num_classes, "default": min(config["DEFAULT_TOPK"], num_classes)}
    binary = {"type": "string", "format": "binary"}
    files = {"type": "array", "items": binary, "maxItems": config["MAX_FILES"]}
    max_mb = config["MAX_CONTENT_LENGTH"] / MIB
    return {
        "post": {
            "operationId": "classify",
            "summary": "Classify one or several photos",
            "description": (
                "Send photos as multipart/form-data in the field `image` (or `file`), several at once if you like, "
                "or one photo as the raw body with an image Content-Type. "
                f"Supported: {SUPPORTED_NAMES}. At most {config['MAX_FILES']} files and {max_mb:g} MiB per request, "
                f"{config['MAX_IMAGE_PIXELS']:,} pixels per image and {config['MAX_REQUEST_PIXELS']:,} for all of a request's images. "
                "A bad file among good ones does not fail the request: "
                "its entry in `results` carries the error instead."
            ),
            "parameters": [
                {
                    "name": "topk",
                    "in": "query",
                    "required": False,
                    "description": f"How many classes to return (default {topk['default']}); counts over the form field.",
                    # No default here: Swagger UI would fill it in, and this value would then override the form's.
                    "schema": {name: value for name, value in topk.items() if name != "default"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                # `file` is accepted too, but not offered here: Swagger UI fills an untouched
                                # `image` with a placeholder text, so a photo chosen under `file` was refused.
                                "image": {**files, "description": "The photos (repeat the field for several)."},
                                "topk": {**topk, "description": "Instead of the query parameter."},
                            },
                        },
                    },
                    "image/*": {"schema": binary},
                    "application/octet-stream": {"schema": binary},
                },
            },
            "responses": {
                "200": {
                    "description": "Classified. One image: `Classification`; several: `BatchClassification`.",
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [_ref("Classification"), _ref("BatchClassification")]},
                            "examples": {"one image": {"value": SINGLE_EXAMPLE}, "several images": {"value": BATCH_EXAMPLE}},
                        }
                    },
                },
                "400": _error(400, "No image, an empty file, a bad topk, or a body that cannot be read."),
                "408": _error(408, "The request did not arrive within HEADER_TIMEOUT or UPLOAD_TIMEOUT seconds."),
                "413": _error(413, "The request, an image, the number of files, or all its images' pixels together are over the limit."),
                "415": _error(415, "Not an accepted Content-Type, or not a usable image."),
                "500": _error(500, "A bug in the service, or a request that ran past TIMEOUT."),
                "501": _error(501, "A Transfer-Encoding other than chunked (gzip, chunked; br; ...)."),
            },
        }
    }


def _get(operation_id: str, summary: str, response: dict[str, Any], description: str = "") -> dict[str, Any]:
    operation = {"operationId": operation_id, "summary": summary, "responses": {"200": response}}
    if description:
        operation["description"] = description
    return {"get": operation}


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _with_request_ids(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation takes an optional X-Request-ID and every response echoes it."""
    for operations in paths.values():
        for operation in operations.values():
            operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/RequestId"})
            for response in operation["responses"].values():
                response["headers"] = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    return paths


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _with_api_keys(paths: dict[str, Any]) -> dict[str, Any]:
    """With API keys on: every operation but the open ones takes a key, and may answer 401."""
    for path, operations in paths.items():
        if api_keys.is_open(path):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            operation["responses"]["401"] = _error(401, "No API key, or a wrong one.")
    return paths


def document(config: Mapping[str, Any], classifier: Classifier) -> dict[str, Any]:
    """The OpenAPI document for this app's configuration and model."""
    paths = {
        "/classify": _classify(config, classifier.num_classes),
        "/health": _get(
            "health",
            "Liveness and readiness",
            _json(_ref("Health"), "This worker has its model loaded and serves.", ok={"status": "ok", "model": "resnet18"}),
            "Cheap: touches neither the model nor the disk. A worker answers only once its model is loaded.",
        ),
        "/model": _get(
            "model", "What is served: model, weights and their sha256, preprocessing, limits", _json(_ref("ModelInfo"), "The model.")
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus metrics, summed over all workers",
            {"description": "Prometheus text exposition format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
        ),
        "/openapi.json": _get(
            "openapi", "This document", {"description": "OpenAPI 3.", "content": {"application/json": {"schema": {"type": "object"}}}}
        ),
        "/docs/": _get("docs", "Interactive API documentation (Swagger UI, served locally; /docs redirects here)", _page("Swagger UI.")),
        "/": _get("demo", "Demo page: choose or drop a photo, see its top 5 classes", _page("The demo page.")),
    }
    keys_on = bool(config["API_KEYS"])
    if keys_on:
        paths = _with_api_keys(paths)
    spec: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "classify",
            "version": API_VERSION,
            "description": (
                f"Image classification with {classifier.name} ({classifier.num_classes} classes). "
                "Every error on every path, including unknown paths (404 `not_found`) and wrong methods "
                '(405 `method_not_allowed`), is JSON: `{"error": {"code": ..., "message": ...}}`.'
            ),
        },
        "paths": _with_request_ids(paths),
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Your id for this request, 1-128 characters from A-Z a-z 0-9 . _ ~ : / + = @ -; "
                    "anything else is replaced by a generated id.",
                    "schema": {"type": "string", "maxLength": 128},
                }
            },
            "headers": {
                "RequestId": {
                    "description": "The request's id, as sent or generated; it is in the request log too.",
                    "schema": {"type": "string"},
                }
            },
        },
    }
    if keys_on:
        spec["components"]["securitySchemes"] = SECURITY_SCHEMES
    return spec
