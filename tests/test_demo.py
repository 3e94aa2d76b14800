"""`python -m dstream.demo` runs from any directory and counts every generated word once; the README
opens with the two commands and its Python examples run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SUMMARY = re.compile(r"^summary: (\d+) batches, (\d+) files, (\d+) words written, (\d+) words counted: OK$", re.M)


def _demo(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dstream.demo", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=120)


def test_demo_counts_every_word_once(tmp_path):
    done = _demo(tmp_path, "--seconds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    m = SUMMARY.search(done.stdout)
    assert m, done.stdout
    batches, files, written, counted = map(int, m.groups())
    assert batches >= 2 and files >= 2 and written > 0
    assert written == counted
    assert "top 5:" in done.stdout
    assert "scheduling" in done.stdout and "processing" in done.stdout and "total" in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory


def test_demo_on_threads_with_short_batches(tmp_path):
    done = _demo(tmp_path, "--seconds", "1", "--interval", "0.2", "--master", "threads[2]")
    assert done.returncode == 0, done.stdout + done.stderr
    assert SUMMARY.search(done.stdout), done.stdout


def test_demo_rejects_a_bad_master(tmp_path):
    done = _demo(tmp_path, "--master", "spark://nowhere:7077")
    assert done.returncode == 2
    assert "--master" in done.stderr and "spark://nowhere:7077" in done.stderr


def _readme_examples() -> list[str]:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    return re.findall(r"^```python\n(.*?)^```", readme.read_text(), re.M | re.S)


def test_readme_starts_with_the_two_commands():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    first_block = re.search(r"^```bash\n(.*?)^```", readme, re.M | re.S).group(1)
    assert first_block.splitlines() == ["pip install -e . && python -m dstream.demo",
                                        "pip install -e '.[test]' && pytest"]


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs(tmp_path, index):
    """Every Python block of the README runs as written (asserts included)."""
    examples = _readme_examples()
    assert len(examples) == 3, "update the parametrisation when README examples are added or removed"
    script = tmp_path / "example.py"
    script.write_text(examples[index])
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    if index == 0:  # the streaming word count printed both batches
        assert "('to', 2)" in done.stdout and "('question', 1)" in done.stdout
