"""PySpark local[N]: the idiomatic RDD word count, sortByKey, and a DataFrame join.

python bench/peers/spark/job.py JOB INPUT OUTPUT WORKERS
"""

from __future__ import annotations

import os
import sys
from operator import add

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def main() -> None:
    job, path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    spark = (
        SparkSession.builder.master(f"local[{workers}]")
        .appName(f"bench-{job}")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", str(workers))
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    target = os.path.join(out, "spark")
    if job == "wordcount":
        counts = sc.textFile(path).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(add)
        counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").saveAsTextFile(target)
    elif job == "sort":
        lines = sc.textFile(path)
        lines.keyBy(lambda line: line[:10]).sortByKey(
            numPartitions=workers
        ).values().saveAsTextFile(target)
    elif job == "join":
        users = spark.read.option("header", True).csv(os.path.join(path, "users.csv"))
        events = spark.read.json(os.path.join(path, "events.jsonl"))
        result = (
            events.join(users, "user_id")
            .groupBy("country")
            .agg(F.sum("amount").alias("amount"), F.count("*").alias("events"))
        )
        result.write.option("sep", "\t").csv(target)
    spark.stop()


if __name__ == "__main__":
    main()
