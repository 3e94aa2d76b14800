"""SQL over an RDD's records with DuckDB on Arrow: the engine behind ``RDD.sql``.

The records are exposed to the query as one relation (``batch`` unless named otherwise) whose columns
are the Arrow columns of the records (what ``toArrow()`` and ``toPandas()`` show): ``value`` for a
scalar RDD, ``key`` and ``value`` for a pair RDD, the field names for an RDD of ``Row`` records (also
for Rows of one field, as in PySpark's ``rdd.map(lambda w: Row(word=w))``).

Columns of cloudpickled Python values (``dstream.records`` keeps values Arrow cannot type that way) are
decoded first: when Arrow's type inference gives back exactly the same values (lists, dicts with the same
keys, ints mixed with floats, ``Decimal``, ``datetime``) the column is typed in SQL; otherwise (custom
classes, tuples, mixed types) it is a ``BLOB`` of the pickles, which a query can only pass through
unchanged: a result column of that name and type comes back as the Python objects again, and an error
of a query that uses such a column says which column it is and what it holds.

DuckDB is an optional dependency (``pip install 'dstream[sql]'``), imported when a query first runs.
Each thread keeps one in-memory DuckDB connection; a query registers its relation, runs, and
unregisters it, so queries see nothing of each other.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dstream import records
from dstream.records import Partition

#: the message when DuckDB is not installed
INSTALL_HINT = "RDD.sql needs DuckDB: pip install 'dstream[sql]'"

_local = threading.local()
_HUGEINT = pa.decimal128(38, 0)


class SQLError(ValueError):
    """A query ``RDD.sql`` cannot run (syntax, an unknown column, a type); the message includes the query."""


def import_duckdb() -> Any:
    """The ``duckdb`` module, or ImportError with the install hint."""
    try:
        import duckdb  # the optional dependency of the [sql] extra
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return duckdb


def _connection(duckdb: Any) -> Any:
    """This thread's DuckDB connection (connecting costs ~15 ms, so it is kept)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect()
        try:  # no lookups of Python variables named in a query (DuckDB 1.1+)
            con.execute("SET python_enable_replacements = false")
        except duckdb.Error:
            pass
        _local.con = con
    return con


def check_query(query: str, name: str = "batch") -> None:
    """Fail early, on the driver: DuckDB missing, a syntax error, or not exactly one SELECT statement."""
    if not isinstance(query, str):
        raise TypeError(f"RDD.sql needs the query as a str, got {type(query).__name__}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"RDD.sql needs the relation's name as a non-empty str, got {name!r}")
    import_duckdb()
    _parse(query)


@functools.lru_cache(maxsize=256)
def _parse(query: str) -> None:
    duckdb = import_duckdb()
    con = _connection(duckdb)
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise SQLError(_message(exc, query, {})) from None
    kinds = [getattr(s.type, "name", str(s.type)).rsplit(".", 1)[-1] for s in statements]
    if kinds != ["SELECT"]:
        got = f"{len(kinds)} statements" if len(kinds) != 1 else f"a {kinds[0]} statement"
        raise SQLError(f"RDD.sql runs one SELECT query, got {got}\n  in the query: {query}")


def run_query(query: str, name: str, split: int, part: Partition) -> pa.Table:
    """The result of ``query`` over the records of ``part`` (one whole batch), as an Arrow table."""
    duckdb = import_duckdb()
    table = records.as_table(part)
    relation, blobs = sql_relation(table)
    con = _connection(duckdb)
    con.register(name, relation)
    try:
        rel = con.sql(query)
        if rel is None:
            raise SQLError(f"RDD.sql runs one SELECT query; this one returns no rows\n  in the query: {query}")
        result = _to_arrow(rel)
    except duckdb.BinderException as exc:
        if _unknown_shape(table):
            return records.EMPTY  # an empty batch has no columns to bind: no rows out
        raise SQLError(_message(exc, query, blobs)) from None
    except duckdb.Error as exc:
        raise SQLError(_message(exc, query, blobs)) from None
    finally:
        con.unregister(name)
    return result_table(result, blobs)


def _to_arrow(rel: Any) -> pa.Table:
    """A relation's rows as a table, across DuckDB versions (``to_arrow_table`` is 1.4+; ``arrow`` before)."""
    for method in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        fetch = getattr(rel, method, None)
        if fetch is not None:
            out = fetch()
            return out.read_all() if isinstance(out, pa.RecordBatchReader) else out
    raise RuntimeError(f"this DuckDB ({type(rel).__name__}) returns no Arrow tables")


def _unknown_shape(table: pa.Table) -> bool:
    """True for an empty batch, whose table is the placeholder ``records.EMPTY`` (no known columns)."""
    return table.num_rows == 0 and table.schema.equals(records.EMPTY.schema)


def sql_relation(table: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """``table`` as SQL sees it: pickled columns typed where Arrow can, else left as BLOBs of pickles.

    Returns the table and, for each column left as pickles, a short description of what it holds.
    A single column of Rows with the same fields (Rows of one field, or named ``key`` and ``value``,
    are stored that way) becomes one column per field.
    """
    if table.num_columns == 1 and records.is_pickled(table.schema.field(0)):
        rows = records.rows_table(records.decode_column(table.column(0), table.schema.field(0)))
        if rows is not None:
            table = rows
    blobs: dict[str, str] = {}
    for i, field in enumerate(table.schema):
        if not records.is_pickled(field):
            continue
        values = records.decode_column(table.column(i), field)
        typed = _infer(values)
        if typed is not None:
            table = table.set_column(i, pa.field(field.name, typed.type), typed)
        else:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            blobs[field.name] = ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "")
    return table, blobs


def _infer(values: list) -> pa.Array | None:
    """An Arrow array of ``values`` when Arrow's inference gives back equal values of the same types."""
    try:
        array = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if pa.types.is_null(array.type) or not _same(array.to_pylist(), values):
        return None
    return array


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same container types (a tuple that comes back as a list is not the same)."""
    if type(a) is not type(b) and not (type(a) in (int, float) and type(b) in (int, float)):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def result_table(result: pa.Table, blobs: dict[str, str]) -> pa.Table:
    """DuckDB's result in dstream's types: HUGEINT sums as int64 when they fit; passed-through pickles
    marked pickled again, so they come back as the Python objects."""
    for i, field in enumerate(result.schema):
        if field.type == _HUGEINT:
            try:
                result = result.set_column(i, pa.field(field.name, pa.int64()),
                                           pc.cast(result.column(i), pa.int64()))
            except pa.ArrowInvalid:
                pass  # beyond int64: keep the decimals
        elif field.name in blobs and pa.types.is_binary(field.type):
            result = result.set_column(i, pa.field(field.name, pa.binary(), metadata={records.PICKLED_KEY: b"1"}),
                                       result.column(i))
    return result


def _message(exc: BaseException, query: str, blobs: dict[str, str]) -> str:
    msg = f"{str(exc).strip()}\n  in the query: {query}"
    text = f"{query}\n{exc}"
    for name, kinds in blobs.items():
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE) or "*" in query:
            msg += (f"\n  note: column {name!r} holds Python objects SQL cannot type ({kinds}); in SQL it is a "
                    f"BLOB of their pickles, which a query can only select unchanged: map the records to plain "
                    f"values (str, int, float, bool, bytes, lists, dicts) first")
    return msg
