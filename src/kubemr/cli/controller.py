"""``kubemr controller``: run the MapReduceJob controller (in a Deployment, or from a laptop)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError

from kubemr.spec import JobDefaults


class LogFormat(StrEnum):
    json = "json"
    text = "text"


def _address(value: str) -> tuple[str, int] | None:
    if value in ("", "0", "off"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{value!r}: give HOST:PORT, or 0 for none")
    return host or "0.0.0.0", int(port)


def _job_defaults(path: Path | None) -> JobDefaults:
    if path is None:
        return JobDefaults()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return JobDefaults.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--job-defaults") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise typer.BadParameter(
            f"{path}: {where}: {err['msg']}", param_hint="--job-defaults"
        ) from None


def controller(
    kubeconfig: Annotated[
        str | None,
        typer.Option(
            help="Kubeconfig file (default: in-cluster config in a pod, else $KUBECONFIG or "
            "~/.kube/config)."
        ),
    ] = None,
    context: Annotated[str | None, typer.Option(help="Kubeconfig context to use.")] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Watch MapReduceJobs of this namespace only; repeat for several (default: all).",
        ),
    ] = None,
    job_defaults: Annotated[
        Path | None,
        typer.Option(
            help="YAML file of the installation's job defaults (storage endpoint, region and "
            "Secret name; worker image, service account, resources, node selector, "
            "tolerations), applied where a MapReduceJob leaves them out."
        ),
    ] = None,
    leader_elect: Annotated[
        bool,
        typer.Option(
            help="Run only while holding a Lease, so that replicas take over from each other."
        ),
    ] = True,
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the leader-election Lease.")
    ] = "kubemr-system",
    health_address: Annotated[
        str,
        typer.Option(help="HOST:PORT serving /healthz, /readyz and /metrics (0: none)."),
    ] = "127.0.0.1:8081",
    log_format: Annotated[
        LogFormat, typer.Option(help="json (one object per line) or text.")
    ] = LogFormat.json,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    workers: Annotated[int, typer.Option(min=1, help="MapReduceJobs reconciled at once.")] = 2,
) -> None:
    """Run the controller that turns MapReduceJob resources into Kubernetes Jobs.

    Exits 0 on SIGTERM, 75 when it loses its lease (to restart as a fresh candidate),
    1 when it cannot start (no CRD, no rights, no configuration).

    Example: kubemr controller --kubeconfig ~/.kube/config --no-leader-elect -n team-a
    """
    from kubemr.controller.main import Options, run

    options = Options(
        kubeconfig=kubeconfig,
        context=context,
        namespaces=tuple(dict.fromkeys(namespace or ())),
        job_defaults=_job_defaults(job_defaults),
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        health_address=_address(health_address),
        log_format=log_format.value,  # type: ignore[arg-type]
        log_level=log_level,
        workers=workers,
    )
    raise typer.Exit(run(options))
