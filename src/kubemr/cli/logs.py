"""``kubemr logs``: the attempts' logs of a job, read from storage, so the logs of pods
long gone still show; with ``--follow``, running pods' logs as they are written (the pod
log API) and each finished attempt's log as it lands, until the job ends."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from kubemr.cli.kubeopts import Context, Kubeconfig, Namespace, note, reported, session
from kubemr.cli.views import outcome
from kubemr.cluster.access import user_storage
from kubemr.cluster.attempts import COMPLETION_INDEX
from kubemr.cluster.errors import ClusterError, Forbidden
from kubemr.cluster.resource import owned_selector, work_url
from kubemr.cluster.tasklogs import Selection, TaskLog, list_logs, read_log, selection, task_label
from kubemr.errors import KubemrError
from kubemr.executors.k8s.manifests import CONTAINER, LABEL_STAGE
from kubemr.storage import StorageError

if TYPE_CHECKING:
    from kubemr.cluster.client import JobsClient, LogStream

Obj = dict[str, Any]
Key = tuple[str, int, str]
"""An attempt: stage, index, attempt id (the pod's name)."""

TICK = 2.0
"""Seconds between looks at the pods and the stored logs while following."""
DRAIN = 15.0
"""Seconds to let running pods' streams end after the job did."""


def logs(
    name: Annotated[str, typer.Argument(help="The MapReduceJob's name.")],
    task: Annotated[
        str | None,
        typer.Option(
            help="One task: plan, commit, map-I or reduce-I (step 0), map-S-I, reduce-S-I "
            "(as status.failure.task: map-0-00012)."
        ),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="One stage: plan, map-S, reduce-S or commit.")
    ] = None,
    attempt: Annotated[
        str | None, typer.Option(help="One attempt: its id (the pod's name), or its start.")
    ] = None,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing: running pods' logs as they come, finished attempts' logs as "
            "they land in storage, until the job ends.",
        ),
    ] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Print the logs of a job's task attempts from storage (<work dir>/logs/...).

    Storage is read with this machine's own credentials. Several logs are printed one
    after the other under a '==> task attempt <==' header; with --follow every line has a
    '[task attempt]' prefix.

    Example: kubemr logs wordcount --task map-0-00003
    """
    with reported():
        chosen = selection(task, stage, attempt)
        cluster = session(kubeconfig, context, namespace)
        resource = cluster.jobs.get(cluster.namespace, name)
        if follow_:
            Follower(cluster.jobs, cluster.namespace, resource, chosen, sys.stdout).run()
        else:
            _print_stored(resource, chosen, sys.stdout)


def _options(resource: Obj) -> Any:
    return user_storage(((resource.get("spec") or {}).get("storage") or {}).get("endpoint"))


def _stored(resource: Obj, chosen: Selection) -> list[TaskLog]:
    where = work_url(resource)
    if where is None:
        return []
    try:
        found = list_logs(where, _options(resource))
    except KubemrError:
        raise
    except Exception as exc:  # storage clients raise their own kinds
        raise StorageError(
            f"cannot list the logs in {where}: {type(exc).__name__}: {exc}"
        ) from None
    return [log for log in found if chosen.matches(log.stage, log.index, log.attempt)]


def _print_stored(resource: Obj, chosen: Selection, out: TextIO) -> None:
    found = _stored(resource, chosen)
    if not found:
        where = work_url(resource) or "its work dir"
        note(f"no logs of {chosen.describe()} in {where}/logs yet")
        return
    for log in found:
        if len(found) > 1:
            out.write(f"==> {log.task} {log.attempt} <==\n")
        text = read_log(log.url, _options(resource)).decode("utf-8", "replace")
        out.write(text if text.endswith("\n") or not text else text + "\n")
        out.flush()


class Follower:
    """Prints a job's logs as they come, each line once, until the job ends.

    A running pod's log is streamed (the pod log API, ``follow``); a stream that ends while
    the pod still runs is opened again, and the lines already printed are skipped. An
    attempt's stored log is printed when it lands, from the first line not printed yet.
    """

    def __init__(
        self,
        jobs: JobsClient,
        namespace: str,
        resource: Obj,
        chosen: Selection,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = jobs
        self.namespace = namespace
        self.resource = resource
        self.chosen = chosen
        self.out = out
        self.clock = clock
        self.printed: dict[Key, int] = {}
        """Lines printed of each attempt."""
        self.done: set[Key] = set()
        """Attempts whose stored log was printed: nothing more comes."""
        self.streams: dict[Key, tuple[threading.Thread, LogStream]] = {}
        self.lock = threading.Lock()
        self.noted: set[str] = set()

    def run(self) -> None:
        from kubemr.cluster.follow import follow

        name = str(self.resource["metadata"]["name"])
        for obj in follow(self.jobs, self.namespace, name, tick=TICK):
            if obj is not None:
                self.resource = obj
            self._stream_running_pods()
            self._print_landed()
            if outcome(self.resource) is not None:
                break
        deadline = self.clock() + DRAIN
        for thread, _ in list(self.streams.values()):
            thread.join(max(deadline - self.clock(), 0.1))
        for thread, stream in list(self.streams.values()):
            stream.close()
            thread.join(5)
        self._print_landed()

    def _write(self, key: Key, lines: list[str]) -> None:
        """Print ``lines``, the next ones of the attempt's log (under the lock)."""
        prefix = f"[{task_label(key[0], key[1])} {key[2]}] "
        self.out.write("".join(prefix + line + "\n" for line in lines))
        self.out.flush()
        self.printed[key] = self.printed.get(key, 0) + len(lines)

    def _stream_running_pods(self) -> None:
        try:
            pods = self.jobs.pods(self.namespace, owned_selector(self.resource))
        except ClusterError as exc:
            self._note_once(f"pods not followed: {exc}")
            return
        for pod in pods:
            meta = pod.get("metadata") or {}
            stage = (meta.get("labels") or {}).get(LABEL_STAGE)
            if not stage or (pod.get("status") or {}).get("phase") != "Running":
                continue
            index = int((meta.get("annotations") or {}).get(COMPLETION_INDEX) or 0)
            key = (stage, index, str(meta.get("name")))
            with self.lock:
                if key in self.done or key in self.streams or not self.chosen.matches(*key):
                    continue
            try:
                stream = self.jobs.pod_log(self.namespace, key[2], CONTAINER, follow=True)
            except Forbidden as exc:
                self._note_once(f"running pods' logs not streamed: {exc}")
                continue
            except ClusterError:
                continue  # not started yet, or gone: looked at again next time
            thread = threading.Thread(target=self._pump, args=(key, stream), daemon=True)
            with self.lock:
                self.streams[key] = (thread, stream)
            thread.start()

    def _pump(self, key: Key, stream: LogStream) -> None:
        try:
            for number, line in enumerate(stream):
                with self.lock:
                    if number >= self.printed.get(key, 0):
                        self._write(key, [line])
        except Exception:
            pass  # broken off: opened again, or the stored copy finishes it
        finally:
            with self.lock:
                self.streams.pop(key, None)

    def _print_landed(self) -> None:
        try:
            landed = _stored(self.resource, self.chosen)
        except KubemrError as exc:
            self._note_once(f"logs in storage not read: {exc}")
            return
        for log in landed:
            key = (log.stage, log.index, log.attempt)
            with self.lock:
                if key in self.done or key in self.streams:
                    continue
            try:
                text = read_log(log.url, _options(self.resource)).decode("utf-8", "replace")
            except Exception:
                continue  # read again next time
            with self.lock:
                if key in self.done or key in self.streams:
                    continue
                self._write(key, text.splitlines()[self.printed.get(key, 0) :])
                self.done.add(key)

    def _note_once(self, text: str) -> None:
        kind = text.partition(":")[0]
        if kind not in self.noted:
            note(text)
            self.noted.add(kind)
