"""Helpers shared by the benchmark parts: tables, verdicts, percentiles, RSS, and the PySpark peer."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
#: the interpreter of a venv with PySpark 4.3 (see the README's Benchmarks section); unset: not measured
PYSPARK_PYTHON = os.environ.get("DSTREAM_PYSPARK_PYTHON", "")


@dataclass
class Table:
    """One printed table: a title, column headers, rows, and notes printed under it."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [[_fmt(c) for c in row] for row in [self.headers] + self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
        line = "+".join("-" * (w + 2) for w in widths)
        out = [f"== {self.title} ==", "+" + line + "+"]
        for n, row in enumerate(cells):
            out.append("| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w)
                                          for c, w in zip(row, widths)) + " |")
            if n == 0:
                out.append("+" + line + "+")
        out.append("+" + line + "+")
        out += [f"  {note}" for note in self.notes]
        return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "").replace("x", "").replace("-", "").isdigit()


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size of a process in KiB: its resident pages, those shared with other processes
    divided among them (``/proc/PID/smaps_rollup``), so that the sum over processes that share pages (workers
    forked from a launcher, or from the driver) counts each page once; VmRSS where there is no rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    except OSError:
        pass
    return rss_kib(pid)


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def pyspark_available() -> tuple[bool, str]:
    """Whether the PySpark venv can import pyspark; the reason when not."""
    if not PYSPARK_PYTHON:
        return False, "DSTREAM_PYSPARK_PYTHON is not set (the python of a venv with pyspark==4.3.0)"
    if not os.path.exists(PYSPARK_PYTHON):
        return False, f"no PySpark interpreter at {PYSPARK_PYTHON} (DSTREAM_PYSPARK_PYTHON)"
    try:
        out = subprocess.run([PYSPARK_PYTHON, "-c", "import pyspark; print(pyspark.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{PYSPARK_PYTHON} failed: {exc}"
    if out.returncode != 0:
        return False, f"pyspark does not import in {PYSPARK_PYTHON}: {out.stderr.strip().splitlines()[-1:]}"
    return True, f"PySpark {out.stdout.strip()}"


def run_peer(*args: str, timeout: float = 1800.0) -> dict:
    """Run ``pyspark_peer.py`` with ``args`` in PySpark's venv; its JSON result (``ok`` False on failure)."""
    cmd = [PYSPARK_PYTHON, os.path.join(HERE, "pyspark_peer.py"), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the PySpark peer timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("PEER-JSON "):
            return json.loads(line[len("PEER-JSON "):])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    return {"ok": False, "error": f"the PySpark peer exited {proc.returncode} without a result: {tail}"}


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)
