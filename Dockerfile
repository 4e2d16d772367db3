# One image for the worker and the dashboard. TensorFlow's CUDA libraries come from PyPI
# (tensorflow[and-cuda]); the host needs only the NVIDIA driver and the container toolkit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sweep ./sweep
COPY studies ./studies
RUN pip install '.[gpu]'

# Runs as an unprivileged user; studies/ and the data volume are read-only to it. It owns
# /artifacts, so a new named volume mounted there (docker-compose.yml) is writable.
RUN useradd --create-home --uid 1000 sweep && mkdir /artifacts && chown sweep /artifacts
USER sweep

CMD ["sweep", "--help"]
