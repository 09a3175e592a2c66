"""The registered model scored by Spark: ``mlflow.pyfunc.spark_udf`` on ``local[2]`` (issue #19).

The logged model carries its own code, so Spark's Python workers load it from the registry as any
executor of a cluster would; the scores equal the local pyfunc's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smartpick_ml.contracts.pairs import CATALOG_FIELDS
from smartpick_ml.data.synthetic import synthetic_catalog_pairs


def test_spark_udf_scores_lean_pairs_as_the_local_model_does(small_training_run, local_spark):
    import mlflow
    from pyspark.sql.functions import col, struct
    from pyspark.sql.types import ArrayType, DoubleType

    world = small_training_run
    programs = pd.read_parquet(world.raw_dir / "programs.parquet")
    pairs = synthetic_catalog_pairs(programs, 400, seed=5)
    lean = pairs.drop(columns=[c for c in CATALOG_FIELDS if c in pairs.columns])
    uri = f"models:/{world.registered_model}@champion"
    with world.isolated_mlflow(world.tracking_uri, cwd=world.root):
        udf = mlflow.pyfunc.spark_udf(local_spark, uri, result_type=ArrayType(DoubleType()),
                                      env_manager="local")
        local = np.asarray(mlflow.pyfunc.load_model(uri).predict(lean))[:, 1]
    # `row` travels beside the request's columns, to put Spark's answers back in order
    frame = local_spark.createDataFrame(lean.assign(row=np.arange(len(lean)))).repartition(2)
    scored = frame.withColumn("proba", udf(struct(*[col(c) for c in lean.columns])))
    got = scored.select("row", "proba").toPandas().sort_values("row")
    q = np.array([p[1] for p in got["proba"]])
    assert len(q) == len(lean)
    np.testing.assert_allclose(q, local, rtol=0, atol=1e-9)
    np.testing.assert_allclose(local, world.model.predict_proba(pairs)[:, 1], rtol=0,
                               atol=1e-9)
    assert pytest.approx(1.0) == float(np.mean([sum(p) for p in got["proba"]]))
