import operator

from dstream.testing import run_stream


def test_parallelize_slices_like_spark(any_ctx):
    assert any_ctx.parallelize([1, 2, 3, 4], 2).glom().collect() == [[1, 2], [3, 4]]


def test_streaming_word_count(any_ctx):
    out = run_stream(any_ctx, [["a b", "b"], ["c"]],
                     lambda s: s.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add))
    assert out == [[("a", 1), ("b", 2)], [("c", 1)]]
