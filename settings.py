"""Configuration: defaults, overridden by environment variables, overridden by a mapping.

Every setting is documented in the README's configuration table (but CLASSIFY_WORKERS, which
gunicorn.conf.py sets); the keys here are the environment variables' names (Flask's own
MAX_CONTENT_LENGTH is fed by MAX_UPLOAD_MB, WORKERS by CLASSIFY_WORKERS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

MIB = 1024 * 1024
T = TypeVar("T")

DEFAULTS: dict[str, Any] = {
    "MODEL_ARCH": "resnet18",
    "MODEL_WEIGHTS": None,  # local state-dict file; skips torchvision's cache and download
    "TORCHVISION_WEIGHTS": "DEFAULT",  # which torchvision weights (and preprocessing) to use
    "MODEL_DOWNLOAD": True,  # may torchvision download weights missing from its cache?
    "LABELS_FILE": None,  # one class name per line; default imagenet_classes.txt
    "MODEL_FACTORY": None,  # "package.module:function" returning (module, preprocess)
    "PRECISION": "fp32",
    "REDUCED_DECODE": True,  # large JPEGs decoded at 1/2, 1/4, 1/8 scale when that still covers the model's input
    "TORCH_THREADS": None,  # None: adaptive under gunicorn (see cpu_budget.py), else all usable CPUs
    "WORKERS": 1,  # set by gunicorn.conf.py so each worker knows its share of the CPUs
    "MAX_CONTENT_LENGTH": 20 * MIB,
    "MAX_IMAGE_PIXELS": 100_000_000,
    "MAX_REQUEST_PIXELS": 100_000_000,  # a request's images together, as decoded: bounds its decoding time and memory
    "MAX_FILES": 32,
    "DEFAULT_TOPK": 5,
    "UPLOAD_TIMEOUT": 10.0,  # seconds for the whole request body to arrive (see body_guard.py)
    "HEADER_TIMEOUT": 10.0,  # seconds for the request headers to arrive (see sync_worker.py)
    "API_KEYS": [],  # empty: no key needed (see api_keys.py)
    "API_KEYS_FILE": None,  # one key per line, added to API_KEYS by load()
    "CORS_ORIGINS": [],  # empty: no CORS headers at all
    "PROXY_HOPS": 0,  # proxies in front whose X-Forwarded-For and -Proto are trusted (werkzeug's ProxyFix)
}


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message says which and why."""


def check_default_topk(config: Mapping[str, Any], num_classes: int) -> None:
    """A DEFAULT_TOPK over the model's classes is refused, unless it is the built-in default (a
    model of 3 classes then answers 3)."""
    value = config["DEFAULT_TOPK"]
    if value > num_classes and value != DEFAULTS["DEFAULT_TOPK"]:
        raise ConfigError(f"DEFAULT_TOPK={value} is more than the model's {num_classes} classes.")


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _megabytes(text: str) -> int:
    value = float(text)
    if not 0.001 <= value <= 1_000_000:  # a limit of a few bytes would refuse every photo
        raise ValueError("must be from 0.001 to 1000000")
    return int(value * MIB)


def _text(text: str) -> str | None:
    return text.strip() or None


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:  # also refuses inf and nan, which timers and select() cannot take
        raise ValueError("must be more than 0 and at most 3600")
    return value


def whole_seconds(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 3600:
        raise ValueError("must be a whole number of seconds from 1 to 3600")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return value


def _list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("it names nothing; unset it instead")
    return items


def _origins(text: str) -> list[str]:
    # What a browser sends in Origin: scheme, host and maybe port, nothing after. "*" is any site.
    for origin in (origins := _list(text)):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
            hint = " (a page opened from a file sends Origin: null: serve it over http, e.g. python -m http.server)"
            raise ValueError(
                f"{origin!r} is not an origin; write scheme://host[:port], without a path or trailing slash"
                + (hint if origin == "null" else "")
            )
    return origins


# environment variable -> (config key, parser)
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "MODEL_ARCH": ("MODEL_ARCH", str.strip),
    "MODEL_WEIGHTS": ("MODEL_WEIGHTS", _text),
    "TORCHVISION_WEIGHTS": ("TORCHVISION_WEIGHTS", str.strip),
    "MODEL_DOWNLOAD": ("MODEL_DOWNLOAD", _boolean),
    "LABELS_FILE": ("LABELS_FILE", _text),
    "MODEL_FACTORY": ("MODEL_FACTORY", _text),
    "PRECISION": ("PRECISION", str.strip),
    "REDUCED_DECODE": ("REDUCED_DECODE", _boolean),
    "TORCH_THREADS": ("TORCH_THREADS", positive_int),
    "CLASSIFY_WORKERS": ("WORKERS", positive_int),
    "MAX_UPLOAD_MB": ("MAX_CONTENT_LENGTH", _megabytes),
    "MAX_IMAGE_PIXELS": ("MAX_IMAGE_PIXELS", positive_int),
    "MAX_REQUEST_PIXELS": ("MAX_REQUEST_PIXELS", positive_int),
    "MAX_FILES": ("MAX_FILES", positive_int),
    "DEFAULT_TOPK": ("DEFAULT_TOPK", positive_int),
    "UPLOAD_TIMEOUT": ("UPLOAD_TIMEOUT", _seconds),
    "HEADER_TIMEOUT": ("HEADER_TIMEOUT", _seconds),
    "API_KEYS": ("API_KEYS", _list),
    "API_KEYS_FILE": ("API_KEYS_FILE", _text),
    "CORS_ORIGINS": ("CORS_ORIGINS", _origins),
    "PROXY_HOPS": ("PROXY_HOPS", _count),
}


def environment_value(name: str, parse: Callable[[str], T], default: T, environ: Mapping[str, str] | None = None) -> T:
    """One environment variable, parsed; `default` when it is unset or blank. Raises ConfigError."""
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return default
    try:
        return parse(raw)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}.") from None


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given by environment variables (only those that are set)."""
    settings: dict[str, Any] = {}
    for name, (key, parse) in ENVIRONMENT.items():
        if (value := environment_value(name, parse, None, environ)) is not None:
            settings[key] = value
    return settings


def read_keys_file(path: str) -> list[str]:
    """The keys in an API_KEYS_FILE: one per line, blank lines and `#` comments skipped."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"API_KEYS_FILE={path!r} could not be read ({getattr(exc, 'strerror', None) or exc}).") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ConfigError(f"API_KEYS_FILE={path!r} has no keys in it; unset it to run without keys.")
    return keys


def _parsed(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping's text values read as their environment variable would be: API_KEYS="a,b" is two
    keys, not the characters of one, and MAX_FILES="2" a number."""
    parsed = dict(overrides)
    for name, (key, parse) in ENVIRONMENT.items():
        if name == key and isinstance(value := overrides.get(key), str):
            parsed[key] = environment_value(name, parse, DEFAULTS.get(key), {name: value})
    return parsed


# API_KEYS_FILE path -> its keys, as gunicorn's master read them (at start and on SIGHUP): its
# workers, a replacement for a crashed one too, use these rather than the file as it is by then.
_held_keys: dict[str, list[str]] = {}


def hold_keys_file(path: str | None) -> None:
    """In gunicorn's master: read the keys file once for every worker it forks from now on."""
    held = {path: read_keys_file(path)} if path else {}  # read before forgetting: a bad file keeps the old keys
    _held_keys.clear()
    _held_keys.update(held)


def load(overrides: Mapping[str, Any] | None = None, with_keys_file: bool = True) -> dict[str, Any]:
    """Defaults, then the environment, then explicit overrides (tests, embedding apps).

    The keys file is read here (an unreadable one raises ConfigError), unless gunicorn's master
    holds what it read for its workers (hold_keys_file)."""
    settings = dict(DEFAULTS)
    settings.update(from_environment())
    settings.update(_parsed(overrides or {}))
    if settings["PRECISION"] not in {"fp32", "bf16"}:
        raise ConfigError(f"PRECISION={settings['PRECISION']!r} is not valid: use fp32 or bf16.")
    if (path := settings["API_KEYS_FILE"]) and with_keys_file:
        settings["API_KEYS"] = [*settings["API_KEYS"], *(_held_keys.get(path) or read_keys_file(path))]
    return settings
