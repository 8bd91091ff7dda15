"""Entry point for gunicorn (gunicorn -c gunicorn.conf.py), loaded in each worker after the fork."""

import logging
import sys

from app import create_app
from model import ModelLoadError
from settings import ConfigError

# The app's own log records (a bug's traceback, a warning) on stderr like gunicorn's lines: time, pid, level.
logging.basicConfig(
    level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S %z"
)

try:
    app = create_app()
except (ConfigError, ModelLoadError) as exc:
    print(f"classify: cannot start: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)  # gunicorn's "worker failed to boot": the master shuts down rather than respawning
