"""The driver-kill tests' word count: tests/apps/stateful_wordcount.py run, fed, killed and restarted through
the shared harness ``dstream.demo.harness`` (Bytewax's testing.py shape)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from dstream.demo.harness import Event, RestartableDriver, Snapshot, WordCountFiles, wait_until

APP = Path(__file__).parent / "apps" / "stateful_wordcount.py"


class WordCountDriver(RestartableDriver):
    """A word count app (tests/apps/stateful_wordcount.py unless ``app`` is set), restartable from its
    checkpoint; its files below ``root``."""

    #: the driver script; it takes INPUT_DIR OUTPUT_PREFIX CHECKPOINT_DIR and prints progress lines
    app: Path = APP

    def __init__(self, root: Path, *extra: str, data_root: str | None = None) -> None:
        """``root``: a local directory for the driver's stderr (and the job's files unless ``data_root``, a
        URL such as ``s3://bucket/job``, says where input, output and checkpoint live)."""
        super().__init__([], root / "stderr.log")
        self.files = WordCountFiles(data_root or root)
        #: the checkpoint directory: a Path on local disk, else its URL
        self.checkpoint: Path | str = Path(self.files.checkpoint) if data_root is None else self.files.checkpoint
        self.extra = list(extra)

    def start(self, timeout: float = 30, env: dict[str, str] | None = None) -> Event:
        self.argv = [str(self.app), *self.files.app_args(), *self.extra]
        return super().start(timeout, env)

    def batches_done(self) -> list[int]:
        return [e["time"] for e in self.events if e["event"] == "batch"]

    def write_file(self, words: list[str], lines: int = 1) -> None:
        """Write a file elsewhere, then rename it into the input directory (atomic appearance)."""
        self.files.feed([" ".join(words)] * lines)

    def committed(self) -> Snapshot:
        """Every committed output directory: its _SUCCESS and part files' (inode, mtime)."""
        return self.files.snapshot()

    def latest_counts(self) -> Counter[str]:
        return self.files.latest_counts()

    def wait_caught_up(self, timeout: float = 40) -> bool:
        truth = self.files.truth
        try:
            return wait_until(lambda: dict(self.latest_counts()) == dict(truth), timeout,
                              f"the output to reach the true counts {dict(truth)}")
        except TimeoutError as exc:
            batches = self.files.committed()
            raise TimeoutError(f"{exc}; the newest of {len(batches)} committed batches "
                               f"({max(batches, default=None)}) has {dict(self.latest_counts())}; "
                               f"driver stderr:\n{self.stderr()[-3000:]}") from None
