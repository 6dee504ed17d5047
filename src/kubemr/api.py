"""Running jobs from Python: ``kubemr.run(JobClass, ...)`` and ``kubemr.map_reduce``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubemr.job import Combiner, MapReduce, Pairs, make_job_class
from kubemr.options import param_text
from kubemr.progress import make_reporter
from kubemr.runner import run_job
from kubemr.spec import LocalOptions


def run(
    job: type[MapReduce],
    *,
    inputs: list[str] | str,
    output: str,
    reducers: int | None = None,
    workers: int | None = None,
    split_size: int | str | None = None,
    memory: int | str | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    max_attempts: int | None = None,
    overwrite: bool | None = None,
    work_dir: str | None = None,
    keep_work: bool | None = None,
    skip_bad_records: int | None = None,
    s3_endpoint: str | None = None,
    encoding: str | None = None,
    decode_errors: str | None = None,
    params: Mapping[str, Any] | None = None,
    files: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run a job class on this machine; return the ``_SUCCESS`` summary.

    Options left out (``None``) take their defaults from :class:`kubemr.spec.LocalOptions`,
    where every setting, its default and its limits are defined (``kubemr run --help``
    shows the same). ``params`` are the job's parameters and typed options; a value that
    is not a string is written as a parameter would be (``5``, ``true``, JSON for a
    list). ``files`` are local files shipped with the job (``PATH`` or ``PATH#NAME``).

    Example:
        >>> summary = kubemr.run(WordCount, inputs=["books/"], output="out/")  # doctest: +SKIP
    """
    given = {
        "reducers": reducers,
        "workers": workers,
        "split_size": split_size,
        "memory": memory,
        "input_format": input_format,
        "output_format": output_format,
        "max_attempts": max_attempts,
        "overwrite": overwrite,
        "work_dir": work_dir,
        "keep_work": keep_work,
        "skip_bad_records": skip_bad_records,
        "s3_endpoint": s3_endpoint,
        "encoding": encoding,
        "decode_errors": decode_errors,
    }
    config = LocalOptions.checked(
        inputs=[inputs] if isinstance(inputs, str) else list(inputs),
        output=output,
        params={str(k): param_text(v) for k, v in (params or {}).items()},
        files=list(files or []),
        **{name: value for name, value in given.items() if value is not None},
    )
    return run_job(job, config, make_reporter(progress))


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
