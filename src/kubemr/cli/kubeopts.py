"""What every cluster command shares: the connection flags, one-line errors with the exit
codes of :mod:`kubemr.cli.exits`, and the client."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand

from kubemr.cli.durations import parse_duration
from kubemr.cli.exits import ExitCode, exit_code_for, for_signal
from kubemr.errors import KubemrError, OptionError

if TYPE_CHECKING:  # the Kubernetes client loads when a command talks to a cluster
    from kubemr.cluster.client import JobsClient

Kubeconfig = Annotated[
    str | None,
    typer.Option(
        help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; in a pod without "
        "one: its service account).",
        show_default=False,
    ),
]
Context = Annotated[str | None, typer.Option(help="Kubeconfig context (default: the current one).")]
Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="Namespace (default: the context's namespace, else default)."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
Timeout = Annotated[
    str | None,
    typer.Option(
        help="Give up waiting after this long (90s, 10m, 2h): exit 124, the job keeps running."
    ),
]


def timeout_seconds(text: str | None) -> float | None:
    """``--timeout`` in seconds; a one-line error for a value that is not a duration."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise OptionError(f"--timeout: {exc}") from None
    if seconds <= 0:
        raise OptionError(f"--timeout {text!r}: give a positive duration")
    return seconds


# click's UsageError, whichever click typer runs on (its own copy, in recent versions).
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class OneLineCommand(TyperCommand):
    """A command whose usage errors (a bad or missing option) are one line on stderr,
    exit 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:
            message = exc.format_message()  # type: ignore[attr-defined]
            typer.echo(f"kubemr: {message} (kubemr {ctx.info_name} --help)", err=True)
            raise typer.Exit(int(ExitCode.USAGE)) from None


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"kubemr: {message}", err=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A remark for people, on stderr."""
    typer.echo(f"kubemr: {message}", err=True)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Errors as one line on stderr and their exit code; Ctrl-C as 130."""
    try:
        yield
    except KubemrError as exc:
        fail(" ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__, exit_code_for(exc))
    except KeyboardInterrupt:
        fail("interrupted", for_signal(signal.SIGINT))


@dataclass(frozen=True)
class Session:
    jobs: JobsClient
    namespace: str


def session(kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
    """The client, and the namespace: the flag's, else the context's, else ``default``."""
    from kubemr.cluster.client import JobsClient
    from kubemr.cluster.connect import connect

    connection = connect(kubeconfig, context)
    return Session(JobsClient.connect(connection), namespace or connection.namespace)


def namespace_hint(namespace: str, given: Any) -> str:
    """`` -n NS`` when the namespace was given, for commands suggested to the user."""
    return f" -n {namespace}" if given else ""
