# One image for the worker and the dashboard.
#
#   docker build .                      # GPU: tensorflow[and-cuda]; the host needs only the
#                                       # NVIDIA driver and the container toolkit
#   docker build --build-arg EXTRAS= .  # CPU only: no CUDA wheels, a few GiB smaller
#
# docker-compose.yml builds the CPU image, docker-compose.override.yml (the default on GPU
# hosts) the GPU one.
FROM python:3.11-slim

ARG EXTRAS=gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, from pyproject.toml alone (an empty package stands in for sweep/):
# a change to the code then rebuilds only the last layers, not TensorFlow's.
COPY pyproject.toml README.md ./
RUN mkdir sweep && touch sweep/__init__.py \
    && pip install ".${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall -y sweep && rm -rf sweep build sweep.egg-info

# sweep/ carries the study files (sweep/studies/): the installed package finds them, from any
# working directory. The top-level studies is a link to them, left out of the build context.
COPY sweep ./sweep
RUN pip install --no-deps . && rm -rf build sweep.egg-info

# Runs as an unprivileged user; the installed studies and the data volume are read-only to it.
# It owns /artifacts, so a new named volume mounted there (docker-compose.yml) is writable.
RUN useradd --create-home --uid 1000 sweep && mkdir /artifacts && chown sweep /artifacts
USER sweep

CMD ["sweep", "--help"]
