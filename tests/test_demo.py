"""`python -m dstream.demo` kills its streaming driver with SIGKILL, restarts it and finds exactly-once output;
the README opens with the two commands and its Python examples run as written; the demo's harness finds
worker processes and reads committed output, and nothing in the library imports the demo."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dstream
import dstream.demo
import dstream.driver
import dstream.executors
from dstream.demo.harness import WordCountFiles, committed_batches, worker_processes

VERDICT_OK = re.compile(r"^verdict: OK: final counts equal the (\d+) words written in (\d+) files; (\d+) batches "
                        r"committed exactly once across (\d+) SIGKILLs; no orphan executors$", re.M)
README = Path(__file__).resolve().parent.parent / "README.md"


def _demo(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dstream.demo", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=120)


def test_demo_survives_two_sigkills_with_exactly_once_output(tmp_path):
    done = _demo(tmp_path, "--kills", "2", "--batches", "8", "--interval", "0.4")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    m = VERDICT_OK.search(out)
    assert m, out
    words, files, batches, kills = map(int, m.groups())
    assert files == 8 and kills == 2 and words > 0 and batches >= files
    # The timeline: both kill scenarios, a file arriving while the driver was down, two restores that
    # recomputed batches, and the killed drivers' executor processes exiting by themselves.
    assert len(re.findall(r"SIGKILL driver pid \d+", out)) == 2, out
    assert "while a file was being renamed in" in out
    assert "(the driver is down)" in out
    assert len(re.findall(r"started \(restored from the checkpoint of batch", out)) == 2, out
    assert len(re.findall(r"recovered: [1-9]\d* batches recomputed", out)) == 2, out
    assert len(re.findall(r"exited by themselves", out)) == 2, out
    assert "recomputed:" in out  # batch lines of replayed batches
    # Its temporary directory (input, output, checkpoint) is gone, and nothing was left in the cwd.
    workdir = re.search(r"checkpoint (\S+)/checkpoint$", out, re.M).group(1)
    assert not os.path.exists(workdir)
    assert list(tmp_path.iterdir()) == []


def test_demo_checkpoints_to_a_url_on_threads(tmp_path):
    """--checkpoint takes an fsspec URL; the thread executor has no worker processes to outlive the driver."""
    url = (tmp_path / "cp").as_uri()
    done = _demo(tmp_path, "--kills", "1", "--batches", "4", "--interval", "0.3", "--master", "threads[2]",
                 "--checkpoint", url)
    assert done.returncode == 0, done.stdout + done.stderr
    m = VERDICT_OK.search(done.stdout)
    assert m and m.group(4) == "1", done.stdout
    assert any(p.name.startswith("checkpoint-") for p in (tmp_path / "cp").iterdir())  # the user's location
    assert "thread executors" in done.stdout


@pytest.mark.parametrize("args, names", [
    (["--master", "spark://nowhere:7077"], ["--master", "spark://nowhere:7077"]),
    (["--kills", "3", "--batches", "5"], ["--batches", "8"]),
    (["--checkpoint", "memory://cp"], ["--checkpoint", "memory://"]),
])
def test_demo_rejects_bad_options(tmp_path, args, names):
    done = _demo(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    for name in names:
        assert name in done.stderr


def test_demo_refuses_a_checkpoint_of_another_job(tmp_path):
    (tmp_path / "cp").mkdir()
    (tmp_path / "cp" / "checkpoint-1000").write_bytes(b"not ours")
    done = _demo(tmp_path, "--checkpoint", str(tmp_path / "cp"))
    assert done.returncode == 2
    assert "--checkpoint" in done.stderr and "already holds a checkpoint" in done.stderr


def _readme_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S).group(1)
    assert first_block.splitlines() == ["pip install -e . && python -m dstream.demo",
                                        "pip install -e '.[test]' && pytest"]


@pytest.mark.parametrize("index", range(6))
def test_readme_example_runs(tmp_path, index):
    """Every Python block of the README runs as written (asserts included)."""
    examples = _readme_examples()
    assert len(examples) == 6, "update the parametrisation when README examples are added or removed"
    script = tmp_path / "example.py"
    script.write_text(examples[index])
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    if index == 0:  # the streaming word count printed both batches
        assert "('to', 2)" in done.stdout and "('question', 1)" in done.stdout


def _imported_modules(path: Path, package: str) -> list[str]:
    """Every module an import in ``path`` (a module of ``package``) names, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = (".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level else node.module or "")
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def test_nothing_in_the_library_imports_the_demo():
    demo_dir = Path(dstream.demo.__file__).parent
    bad = []
    for package in (dstream, dstream.driver, dstream.executors):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            if demo_dir in path.parents:  # an installed wheel puts dstream/demo inside dstream/
                continue
            sub = path.parent.relative_to(root).parts
            modules = _imported_modules(path, ".".join([package.__name__, *sub]))
            bad += [f"{path}: {m}" for m in modules if m == "dstream.demo" or m.startswith("dstream.demo.")]
    assert bad == []


def test_harness_finds_the_worker_processes_of_a_driver(pctx):
    workers = set(pctx.executor.worker_pids())
    assert workers and workers <= set(worker_processes(os.getpid()))
    assert worker_processes(os.getpid() + 10_000_000) == []


def test_harness_feeds_files_whole_and_reads_only_committed_batches(tmp_path):
    job = WordCountFiles(tmp_path)
    name, _ = job.feed(["a b", "b"])
    assert (Path(job.input) / name).read_text() == "a b\nb\n" and not os.listdir(job.staging)
    job.feed(["c"])
    assert job.truth == {"a": 1, "b": 2, "c": 1} and len(job.files) == 2
    for t, done in ((1000, True), (2000, True), (3000, False)):  # batch 3000 is torn: no _SUCCESS
        d = Path(f"{job.prefix}-{t}")
        d.mkdir()
        (d / "part-00000").write_text(f"('a', {t // 1000})\n('b', 2)\n")
        if done:
            (d / "_SUCCESS").write_text("")
    assert list(committed_batches(job.out, "counts")) == [1000, 2000]
    assert job.latest_counts() == {"a": 2, "b": 2}
    assert sorted(job.snapshot()) == ["counts-1000", "counts-2000"]
    assert sorted(job.snapshot()["counts-2000"]) == ["_SUCCESS", "part-00000"]
