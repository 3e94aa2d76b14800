"""Fast checks of the benchmark suite's own logic (no engine, no PySpark): the workload, the raw pyarrow
baseline, the result checks, the statistics, the table layout and the py-spy summary.

    python -m pytest -q benchmarks/test_benchmarks.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import hotspots  # noqa: E402
import scaling  # noqa: E402
import workload  # noqa: E402
import wordcount  # noqa: E402


def test_batches_are_deterministic_per_seed_and_differ_between_seeds():
    assert workload.batch_lines(7, 50) == workload.batch_lines(7, 50)
    assert workload.batch_lines(7, 50) != workload.batch_lines(8, 50)
    assert all(len(line.split(" ")) == workload.WORDS_PER_LINE for line in workload.batch_lines(7, 50))


def test_word_frequencies_follow_the_zipf_weights():
    idx = workload.word_indices(3, 20_000).ravel()
    counts = np.bincount(idx, minlength=workload.VOCAB)
    harmonic = (1.0 / np.arange(1, workload.VOCAB + 1)).sum()
    # word i is drawn with probability 1/((i+1) H): word 0 about 10.2 %, word 1 half of that
    assert counts[0] / idx.size == pytest.approx(1 / harmonic, rel=0.03)
    assert counts[1] / counts[0] == pytest.approx(0.5, rel=0.05)
    assert idx.min() >= 0 and idx.max() < workload.VOCAB


def test_expected_counts_match_counting_the_lines_in_python():
    lines = workload.batch_lines(11, 2_000)
    words = Counter(w for line in lines for w in line.split(" "))
    assert workload.expected_counts(11, 2_000) == (len(words), sum(words.values()), words["w0"])


def test_raw_pyarrow_baseline_counts_every_word():
    table = wordcount.batch_table(5, 3_001)  # odd: the two halves differ in size
    with ThreadPoolExecutor(2) as pool:
        result = wordcount.raw_pyarrow([table], pool)
    assert result["check"] == list(workload.expected_counts(workload.batch_seed(5), 3_001))


def test_raw_pyarrow_on_n_slices_counts_every_word():
    table = wordcount.batch_table(6, 1_003)
    with ThreadPoolExecutor(3) as pool:
        result = wordcount.raw_pyarrow([table], pool, 3)
    assert result["check"] == list(workload.expected_counts(workload.batch_seed(6), 1_003))


def test_scaling_sweep_helpers():
    assert scaling.default_workers(16) == [1, 2, 4, 8, 16]
    assert scaling.default_workers(2) == [1, 2]
    assert scaling.default_workers(6) == [1, 2, 4, 6]
    assert scaling.workers_label(2, 2) == "2" and "oversubscribed" in scaling.workers_label(4, 2)
    assert scaling.ratio_cell(0.8, 1.0) == ("0.80x", "PASS")
    assert scaling.ratio_cell(0.79, 1.0) == ("0.79x", "MISS")
    assert scaling.overhead_verdict("local[16]", 1.5, 9.9) == ("median < 2; p99 < 10", "PASS; PASS")
    assert scaling.overhead_verdict("threads[2]", 1.5, 12.0) == ("median < 1; p99 < 10", "MISS; MISS")


def test_the_columnar_function_yields_one_pair_per_word():
    table = pa.table({"value": ["a b a", "c"]})
    out = pa.Table.from_batches(list(wordcount.split_into_key_value_batches(table.to_batches())))
    assert out.column_names == ["key", "value"]
    assert out.column("key").to_pylist() == ["a", "b", "a", "c"]
    assert out.column("value").to_pylist() == [1, 1, 1, 1]


def test_row_and_table_checks_agree():
    rows = [("w0", 3), ("w5", 2), ("w9", 1)]
    table = pa.table({"key": [k for k, _ in rows], "value": [v for _, v in rows]})
    assert wordcount.check_of_rows(rows) == wordcount.check_of_table(table) == [3, 6, 3]
    assert wordcount.check_of_rows([("w1", 4)]) == [1, 4, 0]


def test_percentile_interpolates_like_numpy():
    values = [5, 1, 9, 3, 7, 100]
    for q in (0, 50, 90, 99, 100):
        assert common.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert np.isnan(common.percentile([], 50))


def test_table_renders_aligned_rows_and_notes():
    t = common.Table("T", ["name", "lines/s"])
    t.add("raw", 1234567.0)
    t.add("engine", 12.5)
    t.notes.append("a note")
    lines = t.render().splitlines()
    assert lines[0] == "== T =="
    assert len({len(line) for line in lines[1:-1]}) == 1  # every row as wide as the borders
    assert "1,234,567" in t.render() and "12.5" in t.render()
    assert lines[-1] == "  a note"
    assert common.verdict(True) == "PASS" and common.verdict(False) == "MISS" and common.verdict(None) == "-"


def test_hotspots_summary_splits_driver_and_workers_and_drops_waits(tmp_path):
    raw = tmp_path / "profile.txt"
    driver = 'process 1:"python run.py"'
    worker = 'process 1:"python run.py";process 2:"python -m executors.processes 6 /dev/shm/x 1"'
    raw.write_text("\n".join([
        f"{driver};main (run.py:1);Pickler.dump (cloudpickle/cloudpickle.py:1313) 30",
        f"{driver};main (run.py:1);Condition.wait (threading.py:327) 500",
        f"{worker};worker_main (executors/processes.py:74);_group_by (pyarrow/acero.py:419) 10",
        f"{worker};worker_main (executors/processes.py:63);_ConnectionBase.recv_bytes (x.py:1);"
        f"Connection._recv (multiprocessing/connection.py:395) 400",
    ]) + "\n")
    text = hotspots.summarise(str(raw), top=5)
    assert "--- driver: 30 busy samples" in text
    assert "--- worker: 10 busy samples" in text
    assert "100.0%  Pickler.dump (cloudpickle/cloudpickle.py:1313)" in text
    assert "Condition.wait" not in text and "Connection._recv" not in text


_SHARED_PAGES = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import common
block = bytearray(os.urandom(64 * 2**20))  # 64 MiB, resident, shared with the child below
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    os.read(r, 1)  # until the parent has measured
    os._exit(0)
os.close(r)
sizes = [common.rss_kib(os.getpid()), common.pss_kib(os.getpid()), common.rss_kib(pid), common.pss_kib(pid)]
os.write(w, b"x")
os.waitpid(pid, 0)
print(json.dumps(sizes))
"""


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/smaps_rollup"), reason="no /proc/PID/smaps_rollup")
def test_pss_splits_the_pages_a_forked_child_shares():
    """In a process of its own (forking this one would copy the test runner): 64 MiB shared with a child."""
    done = subprocess.run([sys.executable, "-c", _SHARED_PAGES, HERE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    mine_rss, mine_pss, child_rss, child_pss = json.loads(done.stdout)
    assert child_rss > 60 * 1024  # the child's VmRSS counts the shared 64 MiB too...
    assert child_pss < child_rss - 20 * 1024 and mine_pss < mine_rss  # ...its PSS only its share of them
