"""The vectorised bucket ids of a shuffle equal ``portable_hash(key) % n`` computed one key at a time, so
a key lands in the same bucket whether its partition is an Arrow table or Python rows."""
from __future__ import annotations

import zlib

import pyarrow as pa
import pytest

from dstream.shuffle import _crc32_strings, bucket_ids, portable_hash

STRINGS = ["", "a", "héllo", "w1234", "ünïcødé ✓", "x" * 64, "x" * 65, "emoji 🎉"] + [f"w{i}" for i in range(500)]


def test_vectorised_crc32_equals_zlib():
    got = _crc32_strings(pa.array(STRINGS[:6] + STRINGS[7:]))
    assert [int(h) for h in got] == [zlib.crc32(s.encode()) for s in STRINGS[:6] + STRINGS[7:]]


def test_vectorised_crc32_of_a_slice_and_of_binary():
    sliced = pa.array(STRINGS[:6] + STRINGS[7:]).slice(3, 50)
    assert [int(h) for h in _crc32_strings(sliced)] == [zlib.crc32(s.encode()) for s in sliced.to_pylist()]
    binary = pa.array([b"ab", b"", b"\x00\xff"])
    assert [int(h) for h in _crc32_strings(binary)] == [zlib.crc32(b) for b in binary.to_pylist()]


def test_values_it_cannot_vectorise_are_left_to_the_row_path():
    assert _crc32_strings(pa.array(["x" * 65])) is None  # long values
    assert _crc32_strings(pa.array(["a", None])) is None  # nulls
    assert _crc32_strings(pa.array([1, 2])) is None  # not strings


@pytest.mark.parametrize("n", [2, 3, 7])
def test_bucket_ids_match_portable_hash_for_strings_with_nulls_across_chunks(n):
    keys = STRINGS + [None]
    chunked = pa.chunked_array([pa.array(keys[:40]), pa.array(keys[40:])])
    ids = bucket_ids(chunked, pa.field("key", pa.string()), n)
    assert list(ids) == [portable_hash(k) % n for k in keys]
