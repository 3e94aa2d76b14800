"""The recovery demo (``python -m dstream.demo``) and the harness it shares with the recovery tests and the
benchmarks: start a driver app in its own process, feed it files, SIGKILL it, restart it, read its output.

Nothing in ``dstream``, ``dstream.driver`` or ``dstream.executors`` imports this package.

- ``dstream.demo.harness``: the driver-process machinery (both sides of the JSON progress-line protocol).
- ``dstream.demo.app``: the demo's driver, a checkpointed stateful word count (``python -m dstream.demo.app``).
- ``dstream.demo.recovery_demo``: the demo itself; ``python -m dstream.demo`` runs its ``main``.
"""
