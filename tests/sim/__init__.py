"""A simulated Kubernetes cluster that drives the controller's reconcile at scale."""
