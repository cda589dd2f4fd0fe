"""Text bar charts: scaled from zero to the largest value, grouped or cut to a width."""

from swarm.tui.bars import bars, spark


def test_bars_scale_from_zero_and_group_to_fit():
    assert bars([0, 4, 8], 10) == "▁▄█"
    assert bars([1, 1, 1, 1], 2) == "██"  # summed in pairs: equal
    assert bars([8, 0, 0, 0], 2) == "█▁"
    assert bars([0, 0], 5) == "▁▁"


def test_spark_keeps_the_newest_values():
    assert spark([1, 2, 3, 4, 8], 2) == "▄█"
    assert spark([], 4) == ""
