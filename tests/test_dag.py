"""The DAG scheduler: stages in waves, and small result stages run on the driver."""
from __future__ import annotations

import operator

import pytest

from dstream.executors.base import TaskError


def test_small_shuffle_result_stage_runs_on_the_driver(pctx):
    sched = pctx.scheduler
    before_local, before_tasks = sched.local_result_stages, len(sched.task_records)
    out = pctx.parallelize([(i % 5, 1) for i in range(100)], 2).reduceByKey(operator.add).collect()
    assert sorted(out) == [(k, 20) for k in range(5)]
    assert sched.local_result_stages == before_local + 1
    # only the map stage's two tasks went to the executors
    assert [r.stage for r in sched.task_records[before_tasks:]].count(sched.task_records[-1].stage) == 2


def test_large_shuffle_result_stage_runs_on_the_executors(pctx):
    sched = pctx.scheduler
    before = sched.local_result_stages
    n = sched.local_result_max_rows * 2
    out = pctx.parallelize(range(n), 2).map(lambda x: (x, 1)).reduceByKey(operator.add).count()
    assert out == n
    assert sched.local_result_stages == before


def test_jobs_that_write_never_run_on_the_driver(pctx, tmp_path):
    sched = pctx.scheduler
    before = sched.local_result_stages
    pctx.parallelize([("a", 1), ("b", 2)], 2).reduceByKey(operator.add).saveAsTextFile(str(tmp_path / "out"))
    assert sched.local_result_stages == before
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_an_error_in_a_driver_run_stage_names_the_task_and_the_user_function(pctx):
    def explode(kv):
        raise ValueError(f"bad key {kv[0]}")

    with pytest.raises(TaskError) as err:
        pctx.parallelize([("a", 1)], 1).reduceByKey(operator.add).map(explode).collect()
    assert "explode" in str(err.value) and "bad key a" in str(err.value)


def test_independent_shuffles_run_in_one_wave(ctx):
    a = ctx.parallelize([("k", 1)], 2).reduceByKey(operator.add)
    b = ctx.parallelize([("k", 2)], 2).reduceByKey(operator.add)
    waves = ctx.scheduler.missing_shuffles([a.join(b)])
    # the two reduceByKey shuffles have no order between them: one wave; the join's shuffle comes after
    assert [len(w) for w in waves] == [2, 1]
