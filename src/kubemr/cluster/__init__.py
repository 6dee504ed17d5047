"""The ``kubemr`` command line's side of a cluster: what ``kubemr submit``, ``status``,
``list``, ``describe``, ``logs`` and ``cancel`` need from the Kubernetes API and from the
job's storage.

- :mod:`~kubemr.cluster.connect`: the kubeconfig (or in-cluster) connection, with bounded
  connect and read timeouts;
- :mod:`~kubemr.cluster.client`: the requests; :mod:`~kubemr.cluster.refusals` turns each
  refusal into an error that names what was refused (:mod:`~kubemr.cluster.errors`);
- :mod:`~kubemr.cluster.follow`: a resource followed by watch, with a bounded poll fallback;
- :mod:`~kubemr.cluster.resource`: the ``MapReduceJob`` built from a spec (pure);
- :mod:`~kubemr.cluster.jobcode`: the job's code pickled and uploaded, content-addressed,
  with the local user's storage access (:mod:`~kubemr.cluster.access`);
- :mod:`~kubemr.cluster.tasklogs`: the attempts' logs and failure markers in storage;
- :mod:`~kubemr.cluster.attempts`: failed attempts from pods and storage, merged (pure).

The controller has its own gateway (:mod:`kubemr.executors.k8s.api`); both send raw JSON
through :class:`kubemr.controller.informer.KubeApi`.
"""
