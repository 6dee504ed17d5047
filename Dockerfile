# syntax=docker/dockerfile:1
# The kubemr image: the controller (`kubemr controller`, the chart's Deployment) and the
# workers (`kubemr worker`, the pods of every MapReduceJob). From the checkout:
#   docker build -t ghcr.io/kubemr/kubemr:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
# The base is pinned by tag. To pin it by digest as well (the same bytes on every build),
# pass the digest `docker buildx imagetools inspect python:3.11.13-slim-bookworm` shows:
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
# Runtime dependencies come from requirements.lock (scripts/lock-requirements): exact
# versions, every file checked against its sha256 (docs/install.md).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# -- builder: kubemr's wheel, and a venv with exactly the locked dependencies ----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The lock alone first: this layer is rebuilt only when the dependencies change.
COPY requirements.lock ./
# Wheels only (nothing compiled), each checked against the lock's hashes; --no-deps: the
# lock lists every transitive dependency, so nothing unlocked can come in. The venv has no
# pip of its own: the base image's pip installs into it.
RUN python -m venv --without-pip /opt/kubemr \
 && python -m pip --python /opt/kubemr/bin/python install --no-deps --require-hashes \
      --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m pip --python /opt/kubemr/bin/python install --no-deps --no-index /wheels/kubemr-*.whl \
 && /opt/kubemr/bin/kubemr --help >/dev/null

# -- the image: Python, the venv, a non-root user; no compiler, no installer, no cache --------
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kubemr" \
      org.opencontainers.image.description="MapReduce batch jobs on Kubernetes: the controller and the worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kubemr" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# pip, setuptools and wheel of the base image go: nothing installs anything at run time.
# uid 10001 matches the chart's runAsUser; a numeric USER lets runAsNonRoot verify it.
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kubemr
COPY --from=builder /opt/kubemr /opt/kubemr
# Bytecode was compiled at install: a read-only root file system needs none written.
ENV PATH=/opt/kubemr/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["kubemr"]
CMD ["--help"]
