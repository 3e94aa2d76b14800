"""A stream as notebooks and pages show it: its description, its HTML and its plot.

``describe_stream`` turns a StreamingContext's graph into JSON-ready values (names only: inputs carry
URLs with secrets masked, never storage options). ``html_for_stream`` is ``StreamingContext._repr_html_``;
``plot_statistics`` draws input rate and delays with matplotlib (the ``[notebook]`` extra).
"""
from __future__ import annotations

from typing import Any

from dstream.driver.statistics import StreamStatistics
from dstream.driver.times import batch_name
from dstream.html import definition_list, escape, table

#: batches shown in a stream's HTML table
HTML_BATCHES = 10


def describe_stream(state: str, interval_ms: int, graph: Any, checkpoint: str | None) -> dict[str, Any]:
    """The stream's state, interval, inputs, outputs and operator graph (each output's chain of streams
    back to its inputs, as lines), JSON-ready."""
    return {
        "state": state,
        "interval_ms": interval_ms,
        "checkpoint": checkpoint,
        "inputs": [{"id": i, "name": inp.name, "kind": type(inp).__name__} for i, inp in enumerate(graph.inputs)],
        "outputs": [{"id": i, "name": out.name} for i, out in enumerate(graph.outputs)],
        "graph": [line for out in graph.outputs for line in _chain(out)],
    }


def _chain(stream: Any, depth: int = 0) -> list[str]:
    """``stream`` and its parents, one line each, parents indented under their child."""
    lines = ["  " * depth + stream.name]
    for parent in stream.dependencies:
        lines += _chain(parent, depth + 1)
    return lines


def html_for_stream(description: dict[str, Any], statistics: StreamStatistics) -> str:
    """A StreamingContext in a notebook: state, interval, inputs, outputs, the operator graph and the
    newest batches."""
    summary = statistics.summary()
    pairs = [("state", description["state"]), ("batch interval", f"{description['interval_ms'] / 1000:g} s"),
             ("inputs", ", ".join(i["name"] for i in description["inputs"]) or "none"),
             ("outputs", ", ".join(o["name"] for o in description["outputs"]) or "none"),
             ("batches completed", summary.batches), ("failed batches", summary.failed_batches)]
    if description.get("checkpoint"):
        pairs.append(("checkpoint", description["checkpoint"]))
    if summary.last_error:
        pairs.append(("last error", summary.last_error))
    rows = [(batch_name(b.batch_time_ms), _or_dash(b.records), _or_dash(b.scheduling_delay_ms),
             _or_dash(b.processing_delay_ms), _or_dash(b.total_delay_ms), b.failure or "")
            for b in statistics.batches()[::-1][:HTML_BATCHES]]
    batches = table(["batch", "records", "scheduling delay ms", "processing delay ms", "total delay ms", "failure"],
                    rows) if rows else "<div><i>no batch completed yet</i></div>"
    graph = escape("\n".join(description["graph"]))
    return (f"<div><b>StreamingContext</b>{definition_list(pairs)}"
            f'<details><summary>operator graph</summary><pre style="font-size:11px">{graph}</pre></details>'
            f"{batches}</div>")


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def plot_statistics(statistics: StreamStatistics, ax: Any = None) -> Any:
    """Input rate (records/s) and scheduling, processing and total delay (ms) per batch, over the retained
    batches; two axes stacked, or one given ``ax`` for the delays only. Returns the figure."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    frame = statistics.to_frame()
    interval_s = statistics.interval_ms / 1000
    if ax is None:
        figure, (rate_ax, delay_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
        rate_ax.plot(frame["batch_time"], frame["records"].astype("float") / interval_s, marker=".")
        rate_ax.set_ylabel("input rate (records/s)")
        rate_ax.set_title("dstream: input rate and delays per batch")
    else:
        figure, delay_ax = ax.figure, ax
    for column in ("scheduling_delay_ms", "processing_delay_ms", "total_delay_ms"):
        delay_ax.plot(frame["batch_time"], frame[column].astype("float"), marker=".",
                      label=column.removesuffix("_ms").replace("_", " "))
    delay_ax.axhline(statistics.interval_ms, color="grey", linestyle=":", label="batch interval")
    delay_ax.set_ylabel("ms")
    delay_ax.set_xlabel("batch time")
    delay_ax.legend(loc="upper left", fontsize="small")
    delay_ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    figure.autofmt_xdate()
    return figure
