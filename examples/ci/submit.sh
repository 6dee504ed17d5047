#!/usr/bin/env bash
# Submit a kubemr job to Kubernetes and wait for it: the exit status is the job's, so a
# failed job fails the build (its root cause is printed on stderr).
#
# Usage: examples/ci/submit.sh JOB [kubemr submit options...]
#
#   KUBECONFIG_DATA   the kubeconfig itself, e.g. from a CI secret (else $KUBECONFIG is
#                     used: a file, as a GitLab "File" variable gives one)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL_S3 for S3-compatible
#                     storage): this machine's access, to upload the job's code
#   KUBEMR_TIMEOUT    how long to wait for the job (default 1h; then exit 124)
set -euo pipefail

if [ -n "${KUBECONFIG_DATA:-}" ]; then
  KUBECONFIG="$(mktemp)"
  export KUBECONFIG
  trap 'rm -f "$KUBECONFIG"' EXIT
  printf '%s\n' "$KUBECONFIG_DATA" >"$KUBECONFIG"
fi

# A CI variable that is not set may arrive as an empty one: that is no endpoint.
if [ -z "${AWS_ENDPOINT_URL_S3:-}" ]; then
  unset AWS_ENDPOINT_URL_S3
fi

kubemr submit "$@" --generate-name --wait --timeout "${KUBEMR_TIMEOUT:-1h}"
