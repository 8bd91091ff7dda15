# classify, CPU only.  docker build -t classify .  &&  docker run --rm -p 8000:8000 --stop-timeout 35 classify
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/opt/torch \
    HOST=0.0.0.0 \
    PORT=8000 \
    HEALTH_PORT=8001

WORKDIR /app

# CPU-only builds from PyTorch's CPU wheel index, first: PyPI's torch brings GBs of CUDA libraries.
# Same versions as requirements.txt (tests/test_deploy.py checks), which then finds them installed.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY *.py imagenet_classes.txt ./
COPY web/ web/

# The default weights baked in (hash-checked by torchvision), so that containers start without internet.
RUN python -c "import settings, model, model_loader; model_loader.preload(model.ModelSpec.from_settings(settings.load()))"
ENV MODEL_DOWNLOAD=0

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin classify
USER 10001

EXPOSE 8000
# On the health port, which a busy worker still answers at once (health_port.py); not published.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('HEALTH_PORT') or os.environ['PORT']), timeout=4)"]

# Exec form: gunicorn itself is PID 1 (no shell in between), so SIGTERM reaches it and in-flight requests finish.
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
