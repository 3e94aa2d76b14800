"""Progress lines for the test driver apps: one JSON object a line on stdout, each written whole (the
listener's thread and the main thread both write, and ``print`` writes the text and its newline apart)."""
import json
import sys
import threading

_lock = threading.Lock()


def emit(obj: dict) -> None:
    line = json.dumps(obj) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()
