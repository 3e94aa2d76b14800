"""Block ids: the one place that formats and parses the names of blocks in a block store.

Four kinds of block live in a store (Spark's ``BlockId`` family):

===========  ==========================================  =================================================
kind         name                                        what
===========  ==========================================  =================================================
rdd          ``rdd_<rdd id>_<split>``                     a cached partition of an RDD
data         ``data_<rdd id>_<split>``                    a slice of driver data (``parallelize``)
shuffle      ``shuffle_<shuffle id>_<map>_<reduce>``      one bucket of one shuffle map output
broadcast    ``broadcast_<broadcast id>_<tag>``           a pickled broadcast value (tag: new per store)
===========  ==========================================  =================================================

``*_block`` functions format one block's name, ``*_prefix`` functions the prefix shared by all blocks of one
RDD or shuffle (what ``BlockStore.remove_prefix`` and block leases take; the trailing ``_`` keeps
``rdd_1_`` from matching ``rdd_10_0``). ``parse`` turns a name back into a ``BlockId``. Names are plain
strings because that is what stores and leases key on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

RDD, DATA, SHUFFLE, BROADCAST = "rdd", "data", "shuffle", "broadcast"

_PATTERNS = {
    RDD: re.compile(r"rdd_(\d+)_(\d+)"),
    DATA: re.compile(r"data_(\d+)_(\d+)"),
    SHUFFLE: re.compile(r"shuffle_(\d+)_(\d+)_(\d+)"),
    BROADCAST: re.compile(r"broadcast_(\d+)_([0-9A-Za-z]+)"),
}


@dataclass(frozen=True)
class BlockId:
    """A parsed block name: its kind and the numbers in it (and a broadcast's tag)."""

    kind: str
    #: rdd/data: (rdd id, split); shuffle: (shuffle id, map index, reduce index); broadcast: (id,)
    numbers: tuple[int, ...]
    #: a broadcast block's tag; "" for other kinds
    tag: str = ""

    @property
    def name(self) -> str:
        """The block's name in a store."""
        parts = [self.kind, *map(str, self.numbers)] + ([self.tag] if self.tag else [])
        return "_".join(parts)


def rdd_block(rdd_id: int, split: int) -> str:
    """The cached partition ``split`` of RDD ``rdd_id``."""
    return f"{rdd_prefix(rdd_id)}{split}"


def rdd_prefix(rdd_id: int) -> str:
    """The prefix of every cached partition of RDD ``rdd_id``."""
    return f"{RDD}_{rdd_id}_"


def data_block(rdd_id: int, split: int) -> str:
    """Slice ``split`` of the driver data behind RDD ``rdd_id``."""
    return f"{data_prefix(rdd_id)}{split}"


def data_prefix(rdd_id: int) -> str:
    """The prefix of every slice of the driver data behind RDD ``rdd_id``."""
    return f"{DATA}_{rdd_id}_"


def shuffle_block(shuffle_id: int, map_index: int, reduce_index: int) -> str:
    """Bucket ``reduce_index`` of map output ``map_index`` of shuffle ``shuffle_id``."""
    return f"{shuffle_prefix(shuffle_id)}{map_index}_{reduce_index}"


def shuffle_prefix(shuffle_id: int) -> str:
    """The prefix of every bucket of shuffle ``shuffle_id``."""
    return f"{SHUFFLE}_{shuffle_id}_"


def broadcast_block(broadcast_id: int, tag: str) -> str:
    """Broadcast ``broadcast_id``'s value; ``tag`` (letters and digits) tells apart its successive stores."""
    if not (tag.isascii() and tag.isalnum()):
        raise ValueError(f"a broadcast block tag must be letters and digits, got {tag!r}")
    return f"{BROADCAST}_{broadcast_id}_{tag}"


def parse(name: str) -> BlockId:
    """The ``BlockId`` a block name stands for; ValueError for a name no function here makes."""
    for kind, pattern in _PATTERNS.items():
        match = pattern.fullmatch(name)
        if match:
            if kind == BROADCAST:
                return BlockId(kind, (int(match.group(1)),), match.group(2))
            return BlockId(kind, tuple(int(g) for g in match.groups()))
    raise ValueError(f"not a block id: {name!r}")
