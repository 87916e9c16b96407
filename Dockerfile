# Images of kafka-klaviyo. Not used by `make test`.
#
#   docker build -t kafka-klaviyo .                        # the service (the last stage)
#   docker build --target dev -t kafka-klaviyo-dev .       # + kafka_klaviyo_dev (the emulator)
#
# The service image holds the wheel and its runtime dependencies only: no kafka_klaviyo_dev,
# no tests, no build tools.

# -- build: the wheel, exactly what `pip wheel .` builds on a developer machine --------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- dev: the same wheel plus the dev extra and kafka_klaviyo_dev, for the emulator ----------
#   docker run --rm -p 8080:8080 kafka-klaviyo-dev emulator --host 0.0.0.0 --port 8080 --api-key KEY
FROM python:3.11-slim AS dev
WORKDIR /app
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir "$(ls /tmp/wheels/kafka_klaviyo-*.whl)[dev]" \
    && rm -rf /tmp/wheels \
    && useradd --uid 10001 --no-create-home app
# Not an installed package (the wheel leaves it out): importable from the working directory.
COPY kafka_klaviyo_dev ./kafka_klaviyo_dev
ENV PYTHONPATH=/app
USER 10001
ENTRYPOINT ["python", "-m", "kafka_klaviyo_dev"]
CMD ["--help"]

# -- service: `kafka-klaviyo run`; the default target ----------------------------------------
FROM python:3.11-slim AS service
WORKDIR /app
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/kafka_klaviyo-*.whl \
    && rm -rf /tmp/wheels \
    && useradd --uid 10001 --no-create-home app
USER 10001
# Fewer glibc malloc arenas for the delivery threads: measured -20 MB peak RSS on a backlog.
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["kafka-klaviyo"]
CMD ["run"]
