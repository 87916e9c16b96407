# syntax=docker/dockerfile:1
# Images of kafka-klaviyo. Not used by `make test` (tests/unit/test_compose.py checks this file).
#
#   docker build -t kafka-klaviyo .                        # the service (the last stage)
#   docker build --target dev -t kafka-klaviyo-dev .       # + kafka_klaviyo_dev (the emulator)
#
# The service image holds a virtualenv with the wheel and its runtime dependencies, and tini:
# no kafka_klaviyo_dev, no tests, no build tools, no pip run in the final stage. It runs as
# uid 10001 and writes nothing outside /tmp, so it runs with a read-only root filesystem
# (mount an emptyDir or tmpfs at /tmp).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the wheel (what `pip wheel .` builds on a developer machine) and the venv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
# The venv's path is the same in the final stage, so its scripts' shebangs stay right; pip
# compiles the bytecode here, so the read-only image never needs to write any.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/kafka-klaviyo \
    && /opt/kafka-klaviyo/bin/pip install /wheels/kafka_klaviyo-*.whl \
    && /opt/kafka-klaviyo/bin/pip uninstall --yes pip setuptools

# -- dev: the same wheel with the dev extra and kafka_klaviyo_dev, for the emulator ----------
#   docker run --rm -p 8080:8080 kafka-klaviyo-dev emulator --host 0.0.0.0 --port 8080 --api-key KEY
FROM ${PYTHON_IMAGE} AS dev
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /wheels /tmp/wheels
RUN pip install "$(ls /tmp/wheels/kafka_klaviyo-*.whl)[dev]" && rm -rf /tmp/wheels
# Not an installed package (the wheel leaves it out): importable from the working directory.
COPY kafka_klaviyo_dev ./kafka_klaviyo_dev
ENV PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp TMPDIR=/tmp
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "kafka_klaviyo_dev"]
CMD ["--help"]

# -- service: `kafka-klaviyo run`; the default target ----------------------------------------
FROM ${PYTHON_IMAGE} AS service
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /opt/kafka-klaviyo /opt/kafka-klaviyo
# Nothing is written outside /tmp: bytecode was compiled at build time and is never rewritten,
# HOME and TMPDIR point at the one writable mount, and prometheus_client runs single-process
# (no PROMETHEUS_MULTIPROC_DIR). Fewer glibc malloc arenas for the delivery threads: measured
# -20 MB peak RSS on a backlog.
ENV PATH=/opt/kafka-klaviyo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MALLOC_ARENA_MAX=2
USER 10001:10001
WORKDIR /tmp
# tini is PID 1: it forwards SIGTERM to kafka-klaviyo (which drains, commits and leaves the
# group) and reaps; Python as PID 1 would get no default signal handling from the kernel.
ENTRYPOINT ["/usr/bin/tini", "--", "kafka-klaviyo"]
CMD ["run"]
