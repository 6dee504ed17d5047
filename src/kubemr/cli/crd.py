"""``kubemr crd``: the MapReduceJob CustomResourceDefinition, for ``kubectl apply -f -``."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from kubemr.crd import crd_json, crd_yaml


class CrdFormat(StrEnum):
    yaml = "yaml"
    json = "json"


def crd(
    output: Annotated[
        CrdFormat, typer.Option("--output", "-o", help="Print the manifest as yaml or json.")
    ] = CrdFormat.yaml,
) -> None:
    """Print the MapReduceJob CustomResourceDefinition on stdout.

    Example: kubemr crd | kubectl apply --server-side -f -
    """
    sys.stdout.write(crd_yaml() if output is CrdFormat.yaml else crd_json())
