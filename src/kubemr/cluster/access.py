"""How this machine reaches a job's storage: with the local user's own credentials."""

from __future__ import annotations

import os

from kubemr.storage import StorageOptions


def user_storage(endpoint: str | None) -> StorageOptions:
    """The local user's storage access: credentials from the AWS chain (environment,
    profiles), the endpoint from ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL``, else the
    job's ``storage.endpoint``. The workers' endpoint may be a name only the cluster
    resolves (``http://minio.minio.svc:9000``), so the local one comes first."""
    mine = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return StorageOptions(s3_endpoint=mine or endpoint)
