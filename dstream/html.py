"""Small HTML for notebooks: escaped tables and the ``_repr_html_`` of an RDD.

Plain strings, no template engine and no script: what Jupyter shows inline for ``rdd`` and
``ssc`` (the stream's own view is in ``dstream.views``).
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

STYLE = "border-collapse:collapse;font-size:12px"
CELL = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML ("" for None)."""
    return "" if value is None else html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table with ``header`` and ``rows`` (every cell escaped)."""
    head = "".join(f'<th style="{CELL}">{escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{CELL}">{escape(c)}</td>' for c in row) + "</tr>"
                   for row in rows)
    return f'<table style="{STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def definition_list(pairs: Iterable[tuple[str, Any]]) -> str:
    """Key-value lines, keys in bold."""
    return "".join(f"<div><b>{escape(k)}</b>: {escape(v)}</div>" for k, v in pairs)


def rdd_html(rdd: Any) -> str:
    """An RDD in a notebook: its name, partitions, whether cached, its schema where a cached partition is
    at hand (an RDD's schema is known only once computed), and its lineage."""
    pairs: list[tuple[str, Any]] = [("partitions", rdd.getNumPartitions()),
                                    ("cached", "yes" if rdd.is_cached else "no")]
    schema = _cached_schema(rdd)
    if schema is not None:
        pairs.append(("schema", ", ".join(f"{f.name}: {f.type}" for f in schema)))
    lineage = escape(rdd.toDebugString())
    return (f"<div><b>{escape(repr(rdd))}</b>{definition_list(pairs)}"
            f'<details><summary>lineage</summary><pre style="font-size:11px">{lineage}</pre></details></div>')


def _cached_schema(rdd: Any) -> Any:
    if not rdd.is_cached or rdd.ctx is None or rdd.getNumPartitions() == 0:
        return None
    try:
        block = rdd.ctx.executor.store.get(rdd._block_id(0))
    except Exception:  # noqa: BLE001 - a repr never fails for this
        return None
    return None if block is None else block.schema
