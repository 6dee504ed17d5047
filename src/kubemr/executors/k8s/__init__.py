"""Running a job on Kubernetes: manifests (pure) and the API gateway."""
