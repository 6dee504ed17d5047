"""Files shipped with a job, through a real MinIO server: stored by content in the work
dir (``kubemr run``) or beside the code (``kubemr submit``), downloaded by each worker
into its ``$TMPDIR`` and checked against their sha256."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kubemr
from kubemr.cluster import jobcode
from kubemr.coordinator import StepShape, job_stages
from kubemr.loader import load_job_class
from kubemr.stages import job_id_for
from kubemr.storage import StorageOptions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

JOB = '''
import os

import kubemr
from kubemr.options import File, Options


class Lookup(kubemr.MapReduce):
    """Each record's key looked up in a shipped table; a shipped stop list."""

    FILES = ["table.tsv"]

    class Options(Options):
        skip: File = "skip.txt"

    def setup(self):
        with open(self.files["table.tsv"]) as fh:
            self.table = dict(line.rstrip("\\n").split("\\t") for line in fh)
        with open(self.options.skip) as fh:
            self.skip = set(fh.read().split())

    def mapper(self, line):
        if line not in self.skip:
            yield self.table.get(line, "?"), 1

    reducer = kubemr.SUM

    def reducer_final(self):
        yield "_where", [self.files["table.tsv"], self.options.skip, os.getpid()]
'''

TABLE = "".join(f"k{i}\tgroup{i % 3}\n" for i in range(30))
LINES = [f"k{i % 40}" for i in range(600)]


def make_job(tmp_path: Path) -> Path:
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    path = jobdir / "lookup.py"
    path.write_text(textwrap.dedent(JOB))
    (jobdir / "table.tsv").write_text(TABLE)
    (jobdir / "skip.txt").write_text("k0 k1\n")
    return path


def expected() -> dict:
    table = dict(line.split("\t") for line in TABLE.splitlines())
    counts: dict[str, int] = {}
    for line in LINES:
        if line not in ("k0", "k1"):
            group = table.get(line, "?")
            counts[group] = counts.get(group, 0) + 1
    return counts


def upload_input(client, bucket: str) -> str:
    client.put_object(Bucket=bucket, Key="in/data.txt", Body=("\n".join(LINES) + "\n").encode())
    return f"s3://{bucket}/in/data.txt"


def read_output(client, bucket: str, prefix: str) -> dict:
    out: dict = {}
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    for obj in listing:
        if obj["Key"].rsplit("/", 1)[-1].startswith("part-"):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            for line in body.splitlines():
                key, value = json.loads(line)
                if key == "_where":
                    out.setdefault(key, []).append(value)
                else:
                    out[key] = value
    return out


def test_kubemr_run_with_an_s3_work_dir_downloads_each_file_once_per_worker(
    minio, s3_bucket, tmp_path
) -> None:
    client = minio.client()
    path = make_job(tmp_path)
    summary = kubemr.run(
        load_job_class(str(path)),
        inputs=[upload_input(client, s3_bucket)],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        reducers=3,
        workers=2,
        split_size="1KiB",
    )
    assert summary["tasks"]["map"] > 1
    got = read_output(client, s3_bucket, "out/")
    where = got.pop("_where")
    assert got == expected()
    table_sha = hashlib.sha256(TABLE.encode()).hexdigest()
    for table, skip, _pid in where:
        # A worker's own copy, under $TMPDIR/kubemr-files/<job id>/<sha256>/<name>.
        assert table.endswith(f"/kubemr-files/{summary['job_id']}/{table_sha}/table.tsv")
        assert skip.endswith("/skip.txt")
        assert not os.path.exists(table)  # removed when the run ended
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert not [k for k in keys if k.startswith("work/")]  # the work dir, files and all


def worker(tmp_path: Path, work: str, stage: str, index: int = 0, env: dict | None = None):
    message = tmp_path / f"termination-{stage}-{index}"
    proc = subprocess.run(
        [sys.executable, "-m", "kubemr", "worker", "--work", work, "--stage", stage],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "JOB_COMPLETION_INDEX": str(index),
            "KUBEMR_POD_NAME": f"lookup-{stage}-{index}-pod",
            "KUBEMR_TERMINATION_LOG": str(message),
            # Each pod has a scratch of its own.
            "TMPDIR": str(tmp_path / f"pod-{stage}-{index}"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.returncode, json.loads(message.read_text()), proc.stderr


def test_pods_download_the_submitted_files_into_their_scratch(minio, s3_bucket, tmp_path) -> None:
    client = minio.client()
    path = make_job(tmp_path)
    code_dir = f"s3://{s3_bucket}/_kubemr/code"
    options = StorageOptions()
    # What kubemr submit does: the code pickled, the files stored beside it by content.
    pickled = jobcode.pickle_job(str(path), code_dir)
    files = jobcode.job_files(load_job_class(str(path)), {}, [])
    assert jobcode.upload_files(files, code_dir, options) == 2
    assert jobcode.upload(pickled, options)
    spec_files = jobcode.spec_files(files, code_dir)
    assert all(f["url"].startswith(f"{code_dir}/files/") for f in spec_files)
    for stage_dir in ("plan", "map-0", "reduce-0", "commit"):
        for index in range(4):
            (tmp_path / f"pod-{stage_dir}-{index}").mkdir()
    work = f"s3://{s3_bucket}/work/lookup"
    spec = {
        "name": "lookup",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": work,
        "spec": {
            "job": {
                "pickle": {"url": pickled.url, "sha256": pickled.sha256},
                "files": spec_files,
            },
            "inputs": [upload_input(client, s3_bucket)],
            "output": f"s3://{s3_bucket}/out",
            "reducers": 2,
            "splitSize": "2KiB",
        },
    }
    code, message, err = worker(tmp_path, work, "plan", env={"KUBEMR_SPEC": json.dumps(spec)})
    assert code == 0, err
    shapes = [StepShape(s["maps"], s["reducers"]) for s in message["steps"]]
    assert shapes[0].maps > 1
    *waves, commit = job_stages(shapes)[1:]
    for stage in waves:
        for index in range(stage.tasks):
            code, _, err = worker(tmp_path, work, stage.name, index)
            assert code == 0, err

    # A pod refuses a file changed in storage after the job was planned.
    table_key = spec_files[0]["url"].removeprefix(f"s3://{s3_bucket}/")
    original = client.get_object(Bucket=s3_bucket, Key=table_key)["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=table_key, Body=b"k2\tchanged\n")
    (tmp_path / "pod-map-0-9").mkdir()
    code, message, _ = worker(tmp_path, work, "map-0", 9, env={"JOB_COMPLETION_INDEX": "0"})
    assert code != 0 and not message["ok"]
    assert "shipped file table.tsv" in message["message"]
    assert "is not the file the job was planned with" in message["message"]
    assert not list((tmp_path / "pod-map-0-9").rglob("table.tsv"))  # nothing kept
    client.put_object(Bucket=s3_bucket, Key=table_key, Body=original)

    code, _, err = worker(tmp_path, work, commit.name)
    assert code == 0, err
    got = read_output(client, s3_bucket, "out/")
    where = got.pop("_where")
    assert got == expected()
    job_id = job_id_for("lookup", "0123456789abcdef")
    table_sha = hashlib.sha256(TABLE.encode()).hexdigest()
    for index, (table, skip, _) in enumerate(sorted(where)):
        pod_tmp = tmp_path / f"pod-reduce-0-{index}"
        assert table == str(pod_tmp / "kubemr-files" / job_id / table_sha / "table.tsv")
        assert Path(table).read_text() == TABLE  # downloaded into the pod's own $TMPDIR
        assert Path(skip).parent.parent == pod_tmp / "kubemr-files" / job_id
