"""The plan and commit stages of a job on Kubernetes, as the worker pod runs them.

The plan pod gets the resource's spec in ``$KUBEMR_SPEC`` (it has no API access), loads
the job's code the way the spec names it, and plans as ``kubemr run`` does; the commit pod
publishes the output. Their results reach the controller in the termination message.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import cloudpickle

from kubemr import storage
from kubemr.commit import commit_job
from kubemr.errors import InputError, JobDefinitionError, VersionSkew
from kubemr.job import MapReduce
from kubemr.jobfiles import (
    Manifest,
    ShippedFile,
    check_shipped,
    local_files,
    needed_files,
    shipped,
    upload,
)
from kubemr.loader import load_job_class, pick_job_class
from kubemr.options import check_options
from kubemr.output import OutputClaim
from kubemr.plan import Plan
from kubemr.planning import Planner, new_plan, resolve_inputs
from kubemr.report.records import workers_entry
from kubemr.spec import JobCode, MapReduceJobSpec
from kubemr.storage import StorageOptions
from kubemr.versions import check_code_digest, mismatch, remember_sources

SOURCE_MODULE = "kubemr_job_source"
SOURCE_FILE = "<job source>"
"""The file name tracebacks give lines of inline job source (``spec.job.source``)."""


def job_id_for(name: str, uid: str) -> str:
    """The job id of a resource: the same for every retry of its plan pod."""
    return f"{name}-{uid[:8]}"


def load_code(code: JobCode, options: StorageOptions) -> type[MapReduce]:
    """The job class as the spec gives it: an importable module, a checked pickle in
    storage, or inline source."""
    if code.module:
        return load_job_class(code.module)
    if code.pickle is not None:
        blob = storage.read_bytes(code.pickle.url, options)
        # Before anything of it is read: unpickling runs code.
        check_code_digest(code.pickle.url, blob, code.pickle.sha256, "spec.job.pickle.sha256")
        try:
            meta = json.loads(storage.read_bytes(code.pickle.url + ".meta.json", options))
        except FileNotFoundError:
            meta = None
        if meta is not None:
            problem = mismatch(meta)
            if problem:
                raise VersionSkew(f"the job's code was pickled by another version: {problem}")
            remember_sources(meta.get("sources"))
        cls = cloudpickle.loads(blob)
        if not (isinstance(cls, type) and issubclass(cls, MapReduce)):
            raise JobDefinitionError(f"{code.pickle.url} does not hold a kubemr.MapReduce class")
        return cls
    module = types.ModuleType(SOURCE_MODULE)
    module.__file__ = SOURCE_FILE
    module.__kubemr_source__ = code.source or ""  # type: ignore[attr-defined]
    sys.modules[SOURCE_MODULE] = module
    remember_sources({SOURCE_FILE: code.source or ""})
    try:
        exec(compile(code.source or "", SOURCE_FILE, "exec"), module.__dict__)
    except Exception as exc:
        raise JobDefinitionError(
            f"the job's source failed to run: {type(exc).__name__}: {exc}"
        ) from exc
    cloudpickle.register_pickle_by_value(module)
    return pick_job_class(module, "the job's source", code.class_name or "")


def plan_stage(plan_input: dict[str, Any]) -> dict[str, Any]:
    """Plan a resource's job into its work dir; return the termination message fields."""
    spec = MapReduceJobSpec.model_validate(plan_input["spec"])
    name, uid = plan_input["name"], plan_input["uid"]
    owner = f"{plan_input['namespace']}/{name}"
    options = StorageOptions()
    job_cls = load_code(spec.job, options)
    job_id = job_id_for(name, uid)
    work_url = plan_input["work_url"]
    warnings: list[str] = []
    check_options(job_cls, spec.params)
    files = job_files(job_cls, spec, work_url, job_id, options)
    inputs = resolve_inputs(spec.inputs, options, warnings.append)
    parallelism = spec.workers.max
    plan = new_plan(
        job_cls,
        spec,
        job_id=job_id,
        work_url=work_url,
        inputs=inputs,
        parallelism=parallelism,
        files=files,
    )
    plan.extra = {
        "resource": owner,
        "input_files": len(inputs.files),
        "input_bytes": inputs.total_bytes,
        "skipped_inputs": inputs.skipped,
        "warnings": warnings,
        # For the job report: a wave's most pods and what each asks for (requests the
        # installation's template defaults add are not visible here).
        "workers": workers_entry(spec.workers.max, spec.template.resources.requests),
    }
    planner = Planner(
        job_cls,
        plan,
        inputs,
        options,
        split_size=spec.split_size,
        parallelism=parallelism,
        costly_tasks=True,  # each task is a pod
    )
    planner.check_output(spec.inputs)
    claim = OutputClaim(plan.output_url, job_id, options, owner=owner)
    claim.acquire(spec.overwrite)
    planner.write()
    return {
        "job_id": job_id,
        "steps": [
            {"maps": plan.map_count(i), "reducers": s.reducers} for i, s in enumerate(plan.steps)
        ],
        "warnings": warnings[:3],
    }


def job_files(
    job_cls: type[MapReduce],
    spec: MapReduceJobSpec,
    work_url: str,
    job_id: str,
    options: StorageOptions,
) -> Manifest:
    """The files the job ships: those of ``spec.job.files`` (uploaded by ``kubemr
    submit``), each found in storage; and, for a job from the image (``job.module``),
    those its class asks for that the spec does not list, read from the image and stored
    in the work dir. A file the job asks for that is in neither is named now, before any
    task starts."""
    listed = [ShippedFile(f.name, f.url, f.sha256) for f in spec.job.files or ()]
    found = check_shipped(listed, options)
    names = {f.name for f in found}
    missing = [ref for ref in needed_files(job_cls, spec.params) if ref.name not in names]
    if missing and spec.job.module:
        local = local_files(missing)
        directory = storage.join(work_url, "files")
        upload(local, directory, options)
        found += shipped(local, directory)
    elif missing:
        ref = missing[0]
        raise InputError(
            f"{ref.origin} asks for the file {ref.name}, which spec.job.files does not list: "
            "kubemr submit ships the files a job asks for; written by hand, list it there "
            "(name, url, sha256)"
        )
    return Manifest(found, job_id)


def commit_stage(work_url: str) -> dict[str, Any]:
    """Publish the output of a planned, finished job; return the termination fields."""
    options = StorageOptions()
    plan = Plan.from_json(storage.read_bytes(storage.join(work_url, "plan.json"), options))
    claim = OutputClaim(plan.output_url, plan.job_id, options, owner=plan.extra.get("resource"))
    claim.resume()
    kept = ("input_files", "input_bytes", "skipped_inputs", "warnings")
    extra = {k: plan.extra[k] for k in kept if k in plan.extra}
    summary = commit_job(plan, options, claim, extra)
    claim.finish("succeeded")
    # The work dir goes once the output is complete; the task logs stay for reading.
    store = storage.store_for(work_url, options)
    for info in store.list(work_url.rstrip("/") + "/"):
        if "/logs/" not in info.url[len(work_url) :]:
            store.delete(info.url)
    return {"result": result_of(summary)}


def result_of(summary: dict[str, Any]) -> dict[str, Any]:
    """What the resource's status shows of a ``_SUCCESS`` summary."""
    return {
        "recordsIn": summary["input"]["records"] or 0,
        "recordsOut": summary["output"]["records"] or 0,
        "bytesIn": summary["input"]["bytes"] or 0,
        "bytesOut": summary["output"]["bytes"] or 0,
        "filesOut": len(summary["output"]["files"]),
        "counters": {
            group: dict(list(values.items())[:32])
            for group, values in list(summary["counters"].items())[:16]
        },
    }
