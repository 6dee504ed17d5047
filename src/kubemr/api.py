"""Running jobs from Python: ``kubemr.run(JobClass, ...)`` and ``kubemr.map_reduce``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubemr.errors import OptionError
from kubemr.job import Combiner, MapReduce, Pairs, make_job_class
from kubemr.progress import make_reporter
from kubemr.runner import RunConfig, run_job
from kubemr.sizes import parse_size


def run(
    job: type[MapReduce],
    *,
    inputs: list[str] | str,
    output: str,
    reducers: int | None = None,
    workers: int | None = None,
    split_size: int | str | None = None,
    memory: int | str = "512Mi",
    input_format: str | None = None,
    output_format: str | None = None,
    max_attempts: int = 3,
    overwrite: bool = False,
    work_dir: str | None = None,
    keep_work: bool = False,
    skip_bad_records: int = 0,
    s3_endpoint: str | None = None,
    params: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run a job class on this machine; return the ``_SUCCESS`` summary.

    Example:
        >>> summary = kubemr.run(WordCount, inputs=["books/"], output="out/")  # doctest: +SKIP
    """
    config = RunConfig.checked(
        inputs=[inputs] if isinstance(inputs, str) else list(inputs),
        output=output,
        reducers=reducers,
        workers=workers,
        split_size=None if split_size is None else _size("split_size", split_size),
        memory=_size("memory", memory),
        input_format=input_format,
        output_format=output_format,
        max_attempts=max_attempts,
        overwrite=overwrite,
        work_dir=work_dir,
        keep_work=keep_work,
        skip_bad_records=skip_bad_records,
        s3_endpoint=s3_endpoint,
        params={str(k): str(v) for k, v in (params or {}).items()},
    )
    return run_job(job, config, make_reporter(progress))


def _size(name: str, value: int | str) -> int:
    try:
        return parse_size(value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"invalid {name}={value!r}: {exc}") from None


def map_reduce(
    mapper: Callable[[Any], Pairs] | None = None,
    reducer: Combiner | None = None,
    *,
    inputs: list[str] | str,
    output: str,
    combiner: Combiner | None = None,
    mapper_batch: Callable[[list[Any]], Any] | None = None,
    partitioner: Callable[[Any, int], int] | None = None,
    sort_values: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run a job made of plain functions; options as for :func:`run`.

    Example:
        >>> def words(line):
        ...     for w in line.split():
        ...         yield w, 1
        >>> kubemr.map_reduce(words, kubemr.SUM, inputs="books/", output="out/")  # doctest: +SKIP
    """
    job = make_job_class(
        mapper,
        reducer,
        combiner=combiner,
        mapper_batch=mapper_batch,
        partitioner=partitioner,
        sort_values=sort_values,
    )
    return run(job, inputs=inputs, output=output, **options)
