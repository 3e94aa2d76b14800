"""Records <-> Arrow tables.

A one-column table is a stream of scalars; a table whose columns are exactly ``key`` and ``value`` is a
pair stream of ``(key, value)`` tuples; any other table is a stream of ``Row`` records (tuples with the
column names as field names). Rows with the same field names (at least two, not exactly ``key``/``value``)
become a table with one column per field, so ``Row`` records round-trip through Arrow by name.
A column of Python values that Arrow types exactly (all ``int``, all ``float``, all ``str``, all
``bytes`` or all ``bool``, with ``None`` as null) is stored typed; anything else (mixed types, tuples,
lists, dicts, custom classes) is stored as cloudpickled values in a binary column marked with the field
metadata ``dstream.pickled``, so every record round-trips unchanged.

Inside a fused task a partition is either a ``pa.Table`` or an iterable of Python records; the helpers
``as_rows`` and ``as_table`` convert only when an operator needs the other form.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Iterable, Iterator, Union

import cloudpickle
import pyarrow as pa

from dstream.row import Row

PICKLED_KEY = b"dstream.pickled"
_PICKLED_META = {PICKLED_KEY: b"1"}
_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary(), bool: pa.bool_()}
_NoneType = type(None)

#: a partition inside a task: a table, or Python records
Partition = Union[pa.Table, Iterable[Any]]

EMPTY = pa.table({"value": pa.nulls(0)})  # not pa.array([]): pyarrow imports pandas on its first one


def is_pickled(field: pa.Field) -> bool:
    return bool(field.metadata) and field.metadata.get(PICKLED_KEY) == b"1"


def encode_column(values: list, name: str) -> tuple[pa.Field, pa.Array]:
    """Encode Python values as a typed Arrow array when exact, else as pickled binary."""
    kinds = set(map(type, values))
    kinds.discard(_NoneType)
    if len(kinds) == 1:
        kind = next(iter(kinds))
        arrow_type = _ARROW_TYPES.get(kind)
        if arrow_type is not None:
            try:
                return pa.field(name, arrow_type), pa.array(values, arrow_type)
            except (OverflowError, UnicodeEncodeError, pa.ArrowException):
                pass  # ints beyond 64 bits, str with lone surrogates: keep them exact as pickles
    elif not kinds:
        return pa.field(name, pa.null()), pa.nulls(len(values))
    dumps = cloudpickle.dumps
    pickled = [None if v is None else dumps(v) for v in values]
    return pa.field(name, pa.binary(), metadata=_PICKLED_META), pa.array(pickled, pa.binary())


def decode_column(column: pa.ChunkedArray | pa.Array, field: pa.Field) -> list:
    """The Python values of a column (unpickling a pickled one)."""
    values = column.to_pylist()
    if is_pickled(field):
        loads = cloudpickle.loads
        return [None if v is None else loads(v) for v in values]
    return values


_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_TUPLE, _TWO, _ROW = {tuple}, {2}, {Row}
_PAIR_NAMES = ["key", "value"]


def to_table(records: Iterable[Any]) -> pa.Table:
    """Build a table from Python records (pairs become ``key``/``value`` columns)."""
    if isinstance(records, pa.Table):
        return records
    rows = records if isinstance(records, list) else list(records)
    if not rows:
        return EMPTY
    kinds = set(map(type, rows))
    if kinds == _TUPLE and set(map(len, rows)) == _TWO:
        kf, ka = encode_column(list(map(_first, rows)), "key")
        vf, va = encode_column(list(map(_second, rows)), "value")
        return pa.Table.from_arrays([ka, va], schema=pa.schema([kf, vf]))
    if kinds == _ROW:
        # Rows read back as Rows only from a table of two or more columns that are not key/value;
        # any other Rows are pickled whole
        fields = rows[0].__dict__.get("__fields__")
        if fields is not None and len(fields) >= 2 and fields != _PAIR_NAMES:
            table = rows_table(rows)
            if table is not None:
                return table
    f, a = encode_column(rows, "value")
    return pa.Table.from_arrays([a], schema=pa.schema([f]))


def rows_table(rows: list) -> pa.Table | None:
    """A table with one column per field when ``rows`` are all Rows with the same, unique field names;
    else None."""
    if not rows or set(map(type, rows)) != _ROW:
        return None
    fields = rows[0].__dict__.get("__fields__")
    if not fields:
        return None
    width = len(fields)
    for r in rows:
        f = r.__dict__.get("__fields__")
        if (f is not fields and f != fields) or len(r) != width:
            return None
    if len(set(fields)) != width or not all(type(name) is str for name in fields):
        return None
    encoded = [encode_column(list(values), name) for name, values in zip(fields, zip(*rows))]
    return pa.Table.from_arrays([a for _, a in encoded], schema=pa.schema([f for f, _ in encoded]))


def to_rows(table: pa.Table) -> list:
    """The Python records of a table: scalars, ``(key, value)`` tuples or Rows named by the columns."""
    names = table.column_names
    cols = [decode_column(table.column(i), table.schema.field(i)) for i in range(len(names))]
    if len(cols) == 1:
        return cols[0]
    if not cols:
        return [()] * table.num_rows
    if names == _PAIR_NAMES:
        return list(zip(*cols))
    make = Row._make
    return [make(names, values) for values in zip(*cols)]


def as_rows(part: Partition) -> Iterable[Any]:
    return to_rows(part) if isinstance(part, pa.Table) else part


def as_table(part: Partition) -> pa.Table:
    return part if isinstance(part, pa.Table) else to_table(part)


def is_pair_table(table: pa.Table) -> bool:
    return table.column_names == ["key", "value"]


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate tables; when their schemas differ (typed in one, pickled in another) re-encode rows."""
    tables = [t for t in tables if t.num_rows > 0]
    if not tables:
        return EMPTY
    if len(tables) == 1:
        return tables[0]
    first = tables[0].schema
    if all(t.schema.equals(first, check_metadata=True) for t in tables[1:]):
        return pa.concat_tables(tables)
    return to_table(itertools.chain.from_iterable(to_rows(t) for t in tables))


def batches_of(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches()


def from_batches(batches: Iterable[pa.RecordBatch | pa.Table], fn_name: str) -> pa.Table:
    """Collect what a user's mapInArrow function yielded into one table."""
    tables = []
    for b in batches:
        if isinstance(b, pa.RecordBatch):
            tables.append(pa.Table.from_batches([b]))
        elif isinstance(b, pa.Table):
            tables.append(b)
        else:
            raise TypeError(f"{fn_name} must yield pyarrow.RecordBatch (or Table), got {type(b).__name__}")
    if not tables:
        return EMPTY
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise TypeError(f"{fn_name} yielded batches with different schemas: {exc}") from exc
