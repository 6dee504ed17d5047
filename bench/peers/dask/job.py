"""Dask with the multiprocessing scheduler: a bag word count, dataframe sort and join.

python bench/peers/dask/job.py JOB INPUT OUTPUT WORKERS
"""

from __future__ import annotations

import os
import sys

import dask
import dask.bag as db
import dask.dataframe as dd


def main() -> None:
    job, path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, "dask", "*.txt")
    names = {"name_function": lambda i: f"{i:05d}"}
    with dask.config.set(scheduler="processes", num_workers=workers):
        if job == "wordcount":
            counts = db.read_text(path, blocksize="64MiB").str.split().flatten().frequencies()
            counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").to_textfiles(target, **names)
        elif job == "sort":
            lines = db.read_text(path, blocksize="64MiB").map(str.rstrip, "\n")
            frame = lines.map(lambda line: {"key": line[:10], "line": line}).to_dataframe(
                meta={"key": "str", "line": "str"}
            )
            ordered = frame.sort_values("key")
            ordered["line"].to_bag().to_textfiles(target, **names)
        elif job == "join":
            users = dd.read_csv(os.path.join(path, "users.csv"))
            events = dd.read_json(
                os.path.join(path, "events.jsonl"), lines=True, blocksize=64 << 20
            )
            joined = events.merge(users, on="user_id")
            result = joined.groupby("country").amount.agg(["sum", "count"]).compute()
            with open(os.path.join(out, "result.tsv"), "w") as fh:
                for country, row in result.iterrows():
                    fh.write(f"{country}\t{int(row['sum'])}\t{int(row['count'])}\n")


if __name__ == "__main__":
    main()
