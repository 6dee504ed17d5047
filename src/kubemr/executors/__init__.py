"""Where a job's stages run: a local process pool, or Kubernetes Jobs."""
