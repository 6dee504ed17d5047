# The kubemr worker and CLI image: `kubemr worker` is what task pods run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/kubemr
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --uid 10001 --no-create-home kubemr

USER 10001
ENTRYPOINT ["kubemr"]
CMD ["--help"]
