"""Window operators: window, reduceByWindow, countByWindow, countByValueAndWindow, groupByKeyAndWindow and
reduceByKeyAndWindow (with and without the inverse function, with filterFunc).

Expected outputs of the PySpark cases are PySpark's own (python/pyspark/streaming/tests/test_dstream.py,
WindowFunctionTests, whose batches are 0.5 s). Each test draws its windows: ``bN`` is batch N, ``.`` a
time before the stream started, ``-`` an empty batch (queueStream yields empty batches once its queue is
empty). A window ending at batch t covers the batches in (t - window, t].
"""
from __future__ import annotations

import operator

import pytest

from dstream.testing import run_stream

RANGES5 = [range(1), range(2), range(3), range(4), range(5)]
RANGES6 = RANGES5 + [range(6)]


# -- window ------------------------------------------------------------------------------------------


def test_window_count(any_ctx):
    """PySpark's test_window: window(1.5, 0.5) over 0.5 s batches is three batches wide.

    batch:     b1  b2  b3  b4  b5  b6  b7
    records:    1   2   3   4   5   -   -
    t=b1   [ .   .  b1]                     1
    t=b2       [ .  b1  b2]                 3
    t=b3           [b1  b2  b3]             6
    t=b4               [b2  b3  b4]         9
    t=b5                   [b3  b4  b5]    12
    t=b6                       [b4  b5  -]  9
    t=b7                           [b5  -  -]  5
    """
    out = run_stream(any_ctx, RANGES5, lambda s: s.window(1.5, 0.5).count(), num_batches=7, batch_duration=0.5)
    assert out == [[1], [3], [6], [9], [12], [9], [5]]


def test_window_contents_and_sliding_out_to_empty(ctx):
    """A window keeps emitting after the input stops, until the data has slid out.

    batch:    b1  b2  b3  b4  b5
    records:  1   2   -   -   -
    t=b1  [ .  .  b1]            [1]
    t=b2     [ . b1  b2]         [1, 2]
    t=b3        [b1  b2  -]      [1, 2]
    t=b4            [b2  -  -]   [2]
    t=b5                [-  -  -]  []
    """
    out = run_stream(ctx, [[1], [2]], lambda s: s.window(3), num_batches=5)
    assert out == [[1], [1, 2], [1, 2], [2], []]
    counts = run_stream(ctx, [[1], [2]], lambda s: s.window(3).count(), num_batches=5)
    assert counts == [[1], [2], [2], [1], [0]]


def test_window_sliding_by_two_batches(ctx):
    """window(4, 2): an output every second batch, each covering four batches.

    batch:    b1 b2 b3 b4 b5 b6 b7 b8 b9 b10
    t=b2   [ .  . b1 b2]                     [1, 2]
    t=b4         [b1 b2 b3 b4]               [1, 2, 3, 4]
    t=b6               [b3 b4 b5 b6]         [3, 4, 5, 6]
    t=b8                     [b5 b6 b7 b8]   [5, 6, 7, 8]
    t=b10                          [b7 b8 - -]  [7, 8]
    """
    out = run_stream(ctx, [[i] for i in range(1, 9)], lambda s: s.window(4, 2), num_batches=10)
    assert out == [[1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8]]


def test_window_shorter_than_its_slide_samples_batches(ctx):
    """window(1, 2): every second batch alone.

    batch:    b1 b2 b3 b4
    t=b2        [b2]        [2]
    t=b4              [b4]  [4]

    (queueStream, as in Spark, takes a queue item when a batch of it is computed; the extra output makes
    every batch computed, so b1 and b3 take their items.)
    """
    def sample(stream):
        stream.foreachRDD(lambda rdd: None)
        return stream.window(1, 2)

    assert run_stream(ctx, [[1], [2], [3], [4]], sample) == [[2], [4]]


def test_window_of_a_window(ctx):
    """window(2, 2) of window(2): the outer window unions two inner windows, which overlap.

    batch:        b1  b2  b3  b4
    inner t=b1  [ .  b1]
    inner t=b2      [b1  b2]
    inner t=b3          [b2  b3]
    inner t=b4              [b3  b4]
    outer t=b2  = inner b1 + inner b2   [1] + [1, 2]
    outer t=b4  = inner b3 + inner b4   [2, 3] + [3, 4]
    """
    out = run_stream(ctx, [[1], [2], [3], [4]], lambda s: s.window(2).window(2, 2))
    assert out == [[1, 1, 2], [2, 3, 3, 4]]


@pytest.mark.parametrize("declare,name", [
    (lambda s: s.window(1.5), "windowDuration"),
    (lambda s: s.window(2, 1.5), "slideDuration"),
    (lambda s: s.window(0.5, 1), "windowDuration"),
    (lambda s: s.window(0), "windowDuration"),
    (lambda s: s.window(-2), "windowDuration"),
    (lambda s: s.window("2"), "windowDuration"),
    (lambda s: s.reduceByKeyAndWindow(None, None, 0.1, 0.1), "windowDuration"),  # PySpark's own case
    (lambda s: s.reduceByKeyAndWindow(None, None, 1, 0.1), "slideDuration"),  # PySpark's own case
    (lambda s: s.reduceByKeyAndWindow(operator.add, operator.sub, 2.5, 1), "windowDuration"),
    (lambda s: s.reduceByWindow(operator.add, None, 3, 1.5), "slideDuration"),
    (lambda s: s.countByWindow(2.5, 1), "windowDuration"),
    (lambda s: s.countByValueAndWindow(2, 0.5), "slideDuration"),
    (lambda s: s.groupByKeyAndWindow(3.5, 1), "windowDuration"),
])
def test_window_durations_must_be_multiples_of_the_slide(ssc, declare, name):
    stream = ssc.queueStream([[1]])
    with pytest.raises(ValueError, match=name):
        declare(stream)


def test_window_durations_are_checked_against_the_parent_slide(ssc):
    """A window of a window slides by the outer slide: 2 s here, so 3 s is not a multiple."""
    stream = ssc.queueStream([[1]]).window(4, 2)
    with pytest.raises(ValueError, match="windowDuration"):
        stream.window(3)
    stream.window(6, 4)  # multiples of 2 s are fine


# -- counting windows --------------------------------------------------------------------------------


def test_countByWindow(ctx):
    """PySpark's test_count_by_window: three 0.5 s batches wide, so the full reduce path.

    records:  1  2  3  4  5  -  -
    counts:   1  3  6  9  12 9  5   (the windows of test_window_count)
    """
    out = run_stream(ctx, RANGES5, lambda s: s.countByWindow(1.5, 0.5), num_batches=7, batch_duration=0.5)
    assert out == [[1], [3], [6], [9], [12], [9], [5]]


def test_countByWindow_large(any_ctx):
    """PySpark's test_count_by_window_large: five batches wide, so the inverse (subtract) path.

    batch:    b1 b2 b3 b4 b5 b6 b7 b8 b9 b10 b11
    records:   1  2  3  4  5  6  -  -  -  -   -
    t=b5  [b1 b2 b3 b4 b5]                 15
    t=b6     [b2 b3 b4 b5 b6]              20
    t=b10                [b6 -  -  -  -]    6
    t=b11                   [-  -  -  -  -] 0   (the inverse path keeps the count, now 0)
    """
    out = run_stream(any_ctx, RANGES6, lambda s: s.countByWindow(2.5, 0.5), num_batches=11, batch_duration=0.5)
    assert out == [[1], [3], [6], [10], [15], [20], [18], [15], [11], [6], [0]]


def test_countByValueAndWindow(any_ctx):
    """PySpark's test_count_by_value_and_window: five batches wide; values whose count falls to 0 go.

    batch:    b1 b2 b3 b4 b5 b6 b7 b8 b9 b10 b11
    records: r1 r2 r3 r4 r5 r6  -  -  -  -   -     (rN = range(N))
    t=b10               [b6  -  -  -  -]      each of 0..5 once
    t=b11                  [-  -  -  -  -]    nothing
    """
    out = run_stream(any_ctx, RANGES6, lambda s: s.countByValueAndWindow(2.5, 0.5), num_batches=11,
                     batch_duration=0.5)
    assert out == [
        [(0, 1)],
        [(0, 2), (1, 1)],
        [(0, 3), (1, 2), (2, 1)],
        [(0, 4), (1, 3), (2, 2), (3, 1)],
        [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1)],
        [(0, 5), (1, 5), (2, 4), (3, 3), (4, 2), (5, 1)],
        [(0, 4), (1, 4), (2, 4), (3, 3), (4, 2), (5, 1)],
        [(0, 3), (1, 3), (2, 3), (3, 3), (4, 2), (5, 1)],
        [(0, 2), (1, 2), (2, 2), (3, 2), (4, 2), (5, 1)],
        [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1)],
        [],
    ]


def test_countByValueAndWindow_short_window(ctx):
    """Two batches wide (the full reduce path).

    batch:     b1       b2    b3
    records:  a a b     b     -
    t=b1  [ .  b1]              a:2 b:1
    t=b2     [b1  b2]           a:2 b:2
    t=b3         [b2  -]        b:1
    """
    out = run_stream(ctx, [["a", "a", "b"], ["b"]], lambda s: s.countByValueAndWindow(2, 1), num_batches=3)
    assert out == [[("a", 2), ("b", 1)], [("a", 2), ("b", 2)], [("b", 1)]]


def test_groupByKeyAndWindow(any_ctx):
    """PySpark's test_group_by_key_and_window: three 0.5 s batches wide.

    batch:    b1 b2 b3 b4 b5 b6 b7
    values:   0  1  2  3  4  -  -
    t=b3  [b1 b2 b3]          a: [0, 1, 2]
    t=b7              [b5 -  -]  a: [4]
    """
    out = run_stream(any_ctx, [[("a", i)] for i in range(5)],
                     lambda s: s.groupByKeyAndWindow(1.5, 0.5).mapValues(sorted), num_batches=7,
                     batch_duration=0.5)
    assert out == [[("a", [0])], [("a", [0, 1])], [("a", [0, 1, 2])], [("a", [1, 2, 3])], [("a", [2, 3, 4])],
                   [("a", [3, 4])], [("a", [4])]]


# -- reduceByWindow ----------------------------------------------------------------------------------


def test_reduceByWindow_without_inverse(ctx):
    """Sums over three batches.

    batch:    b1 b2 b3 b4 b5 b6 b7 b8
    records:  1  2  3  4  5  -  -  -
    t=b1  [ .  . b1]            1
    t=b5        [b3 b4 b5]     12
    t=b7              [b5 -  -]  5
    t=b8                 [- - -]  (nothing: the full path has no key left)
    """
    out = run_stream(ctx, [[i] for i in range(1, 6)], lambda s: s.reduceByWindow(operator.add, None, 3, 1),
                     num_batches=8)
    assert out == [[1], [3], [6], [9], [12], [9], [5], []]


def test_reduceByWindow_with_inverse_matches_the_full_reduce(ctx):
    """Five batches wide, so the inverse path: previous window - batch that left + batch that came.

    batch:    b1 b2 b3 b4 b5 b6 b7 b8 b9 b10 b11
    records:  1  2  3  4  5  6  -  -  -  -   -
    t=b6     [b2 b3 b4 b5 b6]        = 15 - 1 + 6 = 20
    t=b11                  [- - - - -]  = 6 - 6 = 0
    """
    inputs = [[i] for i in range(1, 7)]
    full = run_stream(ctx, inputs, lambda s: s.reduceByWindow(operator.add, None, 5, 1), num_batches=11)
    inverse = run_stream(ctx, inputs, lambda s: s.reduceByWindow(operator.add, operator.sub, 5, 1),
                         num_batches=11)
    assert full == [[1], [3], [6], [10], [15], [20], [18], [15], [11], [6], []]
    assert inverse == full[:-1] + [[0]]


# -- reduceByKeyAndWindow ----------------------------------------------------------------------------


def test_reduceByKeyAndWindow_with_none_invFunc(any_ctx):
    """PySpark's case: window 5 s sliding 1 s over 0.5 s batches (ten batches wide, every second batch).

    batch:   b1 b2 b3 b4 ... b12
    records: r1 r2 r3 r4 r5 r6 - - - - - -    (rN = range(N), keyed (x, 1))
    t=b2   [. . . . . . . . b1 b2]      keys {0, 1}
    t=b4   [. . . . . . b1 b2 b3 b4]    keys {0..3}
    t=b12  [b3 ... b12]                 keys {0..5}
    """
    out = run_stream(any_ctx, RANGES6, lambda s: s.map(lambda x: (x, 1)).reduceByKeyAndWindow(
        operator.add, None, 5, 1).filter(lambda kv: kv[1] > 0).count(), num_batches=12, batch_duration=0.5)
    assert out == [[2], [4], [6], [6], [6], [6]]


PAIRS = [[("a", 1)], [("a", 1), ("b", 1)], [], [("b", 2)]]
#: per batch, the sums over the last five batches (the window of every test below that is five wide)
FIVE_WIDE = [[("a", 1)], [("a", 2), ("b", 1)], [("a", 2), ("b", 1)], [("a", 2), ("b", 3)],
             [("a", 2), ("b", 3)], [("a", 1), ("b", 3)], [("b", 2)], [("b", 2)], [], []]


def recorded_sub(calls):
    def sub(a, b):
        calls.append((a, b))
        return a - b
    return sub


def test_reduceByKeyAndWindow_short_window_reduces_the_whole_window(ctx):
    """Three batches wide (< 5 slides): each window is reduced from its batches; invFunc is never used,
    so keys leave when their data does.

    batch:    b1   b2      b3  b4   b5   b6
    records:  a1   a1 b1   -   b2   -    -
    t=b3   [b1 b2 b3]         a:2 b:1
    t=b4      [b2 b3 b4]      a:1 b:3
    t=b5         [b3 b4 b5]   b:2
    t=b6            [b4 b5 b6]   b:2
    """
    calls = []
    out = run_stream(ctx, PAIRS, lambda s: s.reduceByKeyAndWindow(operator.add, recorded_sub(calls), 3, 1),
                     num_batches=7)
    assert out == [[("a", 1)], [("a", 2), ("b", 1)], [("a", 2), ("b", 1)], [("a", 1), ("b", 3)], [("b", 2)],
                   [("b", 2)], []]
    assert calls == []


def test_reduceByKeyAndWindow_long_window_uses_the_inverse(ctx):
    """Five batches wide: the inverse path. Keys whose value falls back to 0 stay (as in PySpark), which
    is what filterFunc is for.

    batch:    b1   b2      b3  b4   b5   b6   b7  ...  b10
    records:  a1   a1 b1   -   b2   -    -    -        -
    t=b5  [b1 b2 b3 b4 b5]            a:2 b:3
    t=b6     [b2 b3 b4 b5 b6]         a:2-1 = 1, b:3
    t=b7        [b3 b4 b5 b6 b7]      a:1-1 = 0, b:3-1 = 2
    t=b9              [b5 .. b9]      a:0, b:2-2 = 0
    """
    calls = []
    out = run_stream(ctx, PAIRS, lambda s: s.reduceByKeyAndWindow(operator.add, recorded_sub(calls), 5, 1),
                     num_batches=10)
    zeros_kept = [[kv for kv in batch] for batch in FIVE_WIDE[:6]] + [
        [("a", 0), ("b", 2)], [("a", 0), ("b", 2)], [("a", 0), ("b", 0)], [("a", 0), ("b", 0)]]
    assert out == zeros_kept
    assert sorted(calls) == [(1, 1), (2, 1), (2, 2), (3, 1)]


def test_reduceByKeyAndWindow_filterFunc_drops_expired_keys(any_ctx):
    """With filterFunc, the inverse path gives exactly the full reduce's windows (FIVE_WIDE)."""
    out = run_stream(any_ctx, PAIRS, lambda s: s.reduceByKeyAndWindow(
        operator.add, operator.sub, 5, 1, filterFunc=lambda kv: kv[1] != 0), num_batches=10)
    assert out == FIVE_WIDE
    full = run_stream(any_ctx, PAIRS, lambda s: s.reduceByKeyAndWindow(operator.add, None, 5, 1), num_batches=10)
    assert full == FIVE_WIDE


def test_reduceByKeyAndWindow_filterFunc_without_inverse(ctx):
    """Three batches wide, keeping key b only.

    batch:    b1   b2      b3  b4   b5
    records:  a1   a1 b1   -   b2   -
    t=b3   [b1 b2 b3]        b:1
    t=b5         [b3 b4 b5]  b:2
    """
    out = run_stream(ctx, PAIRS, lambda s: s.reduceByKeyAndWindow(
        operator.add, None, 3, 1, filterFunc=lambda kv: kv[0] == "b"), num_batches=5)
    assert out == [[], [("b", 1)], [("b", 1)], [("b", 3)], [("b", 2)]]


def test_reduceByKeyAndWindow_inverse_with_a_slide_of_two_batches(ctx):
    """window 10 s sliding 2 s over 1 s batches: five slides, so the inverse path, two batches in and
    two out per slide; it must agree with the full reduce.

    batch:  b1 b2 b3 ... b14 b15 ... b24
    t=b12   [b3 .. b12]  = previous [b1 .. b10] - (b1 b2) + (b11 b12)
    """
    inputs = [[(f"k{i % 3}", i), (f"k{i % 4}", 1)] for i in range(1, 15)]
    calls = []
    inverse = run_stream(ctx, inputs, lambda s: s.reduceByKeyAndWindow(
        operator.add, recorded_sub(calls), 10, 2, filterFunc=lambda kv: kv[1] != 0), num_batches=24)
    full = run_stream(ctx, inputs, lambda s: s.reduceByKeyAndWindow(operator.add, None, 10, 2), num_batches=24)
    assert len(full) == 12 and full[-1] == []
    assert inverse == full
    assert calls  # the inverse path ran


def test_reduceByKeyAndWindow_with_python_reduce_functions(ctx):
    """Arbitrary (non-Arrow) functions and values: string concatenation over two batches.

    batch:   b1    b2     b3
    t=b2  [b1 b2]             a: "x" + "y"
    t=b3     [b2 b3]          a: "y" + "z"
    """
    out = run_stream(ctx, [[("a", "x")], [("a", "y")], [("a", "z")]],
                     lambda s: s.reduceByKeyAndWindow(lambda a, b: "".join(sorted(a + b)), None, 2, 1))
    assert out == [[("a", "x")], [("a", "xy")], [("a", "yz")]]


def test_reduceByKeyAndWindow_numPartitions(ctx):
    out = run_stream(ctx, [[(i, 1) for i in range(6)]], lambda s: s.reduceByKeyAndWindow(
        operator.add, None, 2, 1, numPartitions=3).glom().map(len), sort=False)
    assert out == [[2, 2, 2]]
