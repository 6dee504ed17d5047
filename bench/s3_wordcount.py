"""Word count with data in MinIO against the same job on local disk, same workers.

    python -m bench.s3_wordcount --size 256MB --workers 2 --repeat 3

Starts a MinIO server on 127.0.0.1 (built by scripts/install-minio), uploads the
generated corpus, and runs kubemr with input, work dir and output in MinIO, then with
everything on local disk. Outputs are checked equal; prints MB/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import boto3.s3.transfer

import kubemr
from bench.wordcount_jobs import WordCount
from kubemr import storage
from kubemr.datagen import zipf_text
from kubemr.sizes import parse_size
from tests.integration.minio import MinioServer, minio_binary


def read_output(url: str) -> dict:
    result = {}
    import json

    store = storage.store_for(url)
    for info in store.list(url.rstrip("/") + "/"):
        if info.url.rsplit("/", 1)[-1].startswith("part-"):
            with store.open_read(info.url) as fh:
                for line in fh.read().decode().splitlines():
                    k, v = json.loads(line)
                    result[k] = v
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="256MB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    path = os.path.join(args.data_dir, f"zipf-{size}.txt")
    if not os.path.exists(path):
        zipf_text(path, size)
    mb = os.path.getsize(path) / 1e6
    server = MinioServer(minio_binary())
    server.start()
    try:
        os.environ.update(server.env())
        storage._stores.clear()
        server.make_bucket("bench")
        server.client().upload_file(
            path, "bench", "in/corpus.txt",
            Config=boto3.s3.transfer.TransferConfig(multipart_chunksize=64 << 20),
        )  # fmt: skip
        times: dict[str, list[float]] = {"local": [], "minio": []}
        results = {}
        for i in range(args.repeat):
            for where in ("local", "minio"):
                if where == "local":
                    out = tempfile.mkdtemp(prefix="bench-local-")
                    inputs, work = [path], None
                else:
                    out = f"s3://bench/out{i}"
                    inputs, work = ["s3://bench/in/corpus.txt"], "s3://bench/work"
                t0 = time.perf_counter()
                kubemr.run(
                    WordCount, inputs=inputs, output=out, work_dir=work,
                    workers=args.workers, overwrite=True,
                )  # fmt: skip
                times[where].append(time.perf_counter() - t0)
                results[where] = read_output(out)
        if results["local"] != results["minio"]:
            raise SystemExit("outputs differ between local disk and MinIO; no timing counts")
        med = {k: statistics.median(v) for k, v in times.items()}
        for where, seconds in med.items():
            print(f"{where:<6} {seconds:7.2f} s  {mb / seconds:7.1f} MB/s")
        print(f"MinIO reaches {med['local'] / med['minio']:.1%} of local-disk throughput")
    finally:
        server.close()


if __name__ == "__main__":
    main()
