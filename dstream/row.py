"""Row: a record with named fields, as PySpark's ``pyspark.sql.Row``.

A ``Row`` is a tuple (it compares, hashes and unpacks as one) whose fields also have names::

    >>> row = Row(word="a", total=3)
    >>> row
    Row(word='a', total=3)
    >>> row.word, row["total"], row[1], row.asDict()
    ('a', 3, 3, {'word': 'a', 'total': 3})
    >>> row == ("a", 3)
    True

``Row("word", "total")`` makes a row "class" that builds rows from positional values, as in PySpark.
A table whose columns are neither one column nor exactly ``key``/``value`` is a stream of Rows named by
its columns (see ``dstream.records``); that is what ``RDD.sql`` returns.
"""
from __future__ import annotations

from typing import Any, Sequence


class Row(tuple):
    """A tuple with named fields: ``Row(word='a', total=3)``; ``row.word``, ``row['word']``, ``row[0]``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Row":
        if args and kwargs:
            raise ValueError("Can not use both args and kwargs to create Row")
        if kwargs:
            row = tuple.__new__(cls, kwargs.values())
            row.__dict__["__fields__"] = list(kwargs)
            return row
        return tuple.__new__(cls, args)

    @classmethod
    def _make(cls, fields: list[str], values: Sequence[Any]) -> "Row":
        """A row of ``values`` named ``fields`` (``fields`` is shared, not copied: rows of one table share it)."""
        row = tuple.__new__(cls, values)
        row.__dict__["__fields__"] = fields
        return row

    def asDict(self, recursive: bool = False) -> dict[str, Any]:
        """The fields as a dict; ``recursive`` also turns nested Rows (in lists and dicts too) into dicts."""
        fields = self.__dict__.get("__fields__")
        if fields is None:
            raise TypeError("Cannot convert a Row class into dict")
        if not recursive:
            return dict(zip(fields, self))
        return {name: _as_dict(value) for name, value in zip(fields, self)}

    def __contains__(self, item: Any) -> bool:
        fields = self.__dict__.get("__fields__")
        return item in fields if fields is not None else tuple.__contains__(self, item)

    def __call__(self, *args: Any) -> "Row":
        """A row of this row class: ``Person = Row("name", "age"); Person("Alice", 11)``."""
        if len(args) > len(self):
            raise ValueError(f"Can not create Row with fields {self}, expected {len(self)} values "
                             f"but got {args}")
        return Row._make(list(self), args)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, slice)):
            return tuple.__getitem__(self, item)
        fields = self.__dict__.get("__fields__")
        try:
            return tuple.__getitem__(self, fields.index(item))
        except (AttributeError, ValueError, IndexError):
            raise KeyError(item) from None

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        fields = self.__dict__.get("__fields__")
        try:
            return tuple.__getitem__(self, fields.index(item))
        except (AttributeError, ValueError, IndexError):
            raise AttributeError(item) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key != "__fields__":
            raise RuntimeError("Row is read-only")
        self.__dict__[key] = value

    def __reduce__(self) -> Any:
        fields = self.__dict__.get("__fields__")
        if fields is None:
            return (Row, tuple(self))
        return (_create_row, (fields, tuple(self)))

    def __repr__(self) -> str:
        fields = self.__dict__.get("__fields__")
        if fields is None:
            return "<Row(%s)>" % ", ".join(repr(v) for v in self)
        return "Row(%s)" % ", ".join(f"{k}={v!r}" for k, v in zip(fields, self))


def _create_row(fields: list[str], values: Sequence[Any]) -> Row:
    """Unpickle a Row (module-level, so that pickles refer to it by name)."""
    return Row._make(list(fields), values)


def _as_dict(value: Any) -> Any:
    if isinstance(value, Row) and "__fields__" in value.__dict__:
        return value.asDict(True)
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items()}
    return value


def row_fields(record: Any) -> list[str] | None:
    """The field names of a Row record (None for a Row without names or any other record)."""
    return record.__dict__.get("__fields__") if isinstance(record, Row) else None
