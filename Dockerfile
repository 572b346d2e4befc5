# The recorder worker: one recording per container, `recorder run` (docs/deployment.md).
#
#   docker build -t room-recorder .
#   docker run --rm -e RECORDER_JOB="$(cat job.json)" -e RECORDER_S3_BUCKET=... room-recorder
#
# The job comes from RECORDER_JOB (or a file given as the container's command: `recorder run`
# takes it as its argument). The control endpoint listens on 127.0.0.1:8080 inside the container
# (health, status, metrics); add `--control-host 0.0.0.0` and RECORDER_CONTROL_TOKEN to reach it
# from outside. Stopping the container (SIGTERM) is a graceful stop: the file is closed, stored and
# reported; give it longer than the worker's finalisation timeout (180 s) before a SIGKILL.

FROM python:3.11-slim-bookworm AS build
# The project into a virtual environment, as the README's set-up does (here not editable: the
# image keeps no source tree). Every dependency is a manylinux wheel (PyAV bundles FFmpeg with
# x264 and libvpx, aiortc's codecs and pylibsrtp bundle theirs), so no compiler is needed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY layouts ./layouts
COPY recorder ./recorder
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# The wheels need only libc6, libgcc-s1, libstdc++6 and zlib1g from the system, which the base
# image has (tests/test_deploy.py checks every bundled library's needs). tini runs as PID 1 and
# forwards SIGTERM to the worker (a Python PID 1 would also have to reap and forward itself).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recorder \
    && mkdir /spool /recordings \
    && chown recorder:recorder /spool /recordings
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECORDER_SPOOL_DIR=/spool \
    RECORDER_OUTPUT_DIR=/recordings
WORKDIR /recordings
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["recorder", "health", "--port", "8080"]
ENTRYPOINT ["/usr/bin/tini", "--", "recorder", "run", "--control-port", "8080"]
