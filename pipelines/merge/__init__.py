"""Merge methods: weight-space steps after an update (LiNeS, averaging with the champion, EMA), chosen by name
in a policy's `merge` list and applied in order."""

from pipelines.merge.average import AverageConfig, average
from pipelines.merge.ema import EmaConfig, ema
from pipelines.merge.lines import LinesConfig, lines
from pipelines.plugins import register

register("merge", "lines", LinesConfig, lines)
register("merge", "average", AverageConfig, average)
register("merge", "ema", EmaConfig, ema)

__all__ = ["AverageConfig", "EmaConfig", "LinesConfig", "average", "ema", "lines"]
