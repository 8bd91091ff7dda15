"""Entry point for gunicorn (gunicorn -c gunicorn.conf.py), loaded in each worker after the fork."""

import sys

from app import create_app
from model import ModelLoadError
from settings import ConfigError

try:
    app = create_app()
except (ConfigError, ModelLoadError) as exc:
    print(f"classify: cannot start: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)  # gunicorn's "worker failed to boot": the master shuts down rather than respawning
