"""Benchmark scoring through Spark: ``mlflow.pyfunc.spark_udf`` of the registered model on
``local[2]`` against the same pyfunc's ``predict`` in this process, on the same lean pairs,
measured in the same run. Needs a registered model (``make run``) and pyspark with Java.

    .venv/bin/python benchmarks/bench_spark_udf.py [--model models:/smartpick-match@champion]
        [--pairs 400000] [--catalog data/raw/programs.parquet]

Prints pairs per second of each, Spark's overhead (its time over the local one) and the fixed
cost of a tiny Spark job (start-up of the Python workers and the model load in each).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

from smartpick_ml.contracts.pairs import CATALOG_FIELDS
from smartpick_ml.data.synthetic import synthetic_catalog_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models:/smartpick-match@champion")
    ap.add_argument("--pairs", type=int, default=400_000)
    ap.add_argument("--catalog", default="data/raw/programs.parquet")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, struct
    from pyspark.sql.types import ArrayType, DoubleType

    pyfunc = mlflow.pyfunc.load_model(args.model)
    # the catalog the model was trained with: make run's (lean pairs name its program_ids)
    programs = pd.read_parquet(args.catalog)
    block = min(len(programs), 4000)  # a sample of programs per block, many blocks
    pairs = pd.concat([synthetic_catalog_pairs(programs, block, seed=seed)
                       for seed in range(-(-args.pairs // block))], ignore_index=True
                      ).head(args.pairs)
    lean = pairs.drop(columns=[c for c in CATALOG_FIELDS if c in pairs.columns])
    started = time.perf_counter()
    local = np.asarray(pyfunc.predict(lean))[:, 1]
    local_s = time.perf_counter() - started

    # Spark's Python workers run this interpreter (the one with the project's packages)
    os.environ.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("bench-spark-udf")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.pyspark.python", sys.executable)
             .config("spark.pyspark.driver.python", sys.executable).getOrCreate())
    udf = mlflow.pyfunc.spark_udf(spark, args.model, result_type=ArrayType(DoubleType()),
                                  env_manager="local")
    frame = spark.createDataFrame(lean.assign(row=np.arange(len(lean)))).repartition(2).cache()
    frame.count()  # the data in Spark before timing: the cost measured is the scoring

    def run(df) -> tuple[float, pd.DataFrame]:
        t = time.perf_counter()
        out = df.withColumn("proba", udf(struct(*[col(c) for c in lean.columns]))) \
            .select("row", "proba").toPandas()
        return time.perf_counter() - t, out

    tiny_s, _ = run(frame.limit(100))
    spark_s, got = run(frame)
    q = np.array([p[1] for p in got.sort_values("row")["proba"]])
    gap = float(np.max(np.abs(q - local)))
    spark.stop()
    print(f"{len(lean):,} lean pairs; local pyfunc.predict: {local_s:.1f} s "
          f"({len(lean) / local_s / 1e6:.2f}M pairs/s)")
    print(f"spark_udf on local[2]: {spark_s:.1f} s ({len(lean) / spark_s / 1e6:.2f}M pairs/s); "
          f"overhead {spark_s / local_s:.2f}x the local time; a 100-pair job {tiny_s:.1f} s "
          f"(workers starting, the model loading in each)")
    print(f"largest |q_spark - q_local| = {gap:.2e}   [goal <= 1e-9]")


if __name__ == "__main__":
    main()
