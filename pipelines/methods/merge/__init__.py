"""Merge methods: weight-space steps after an update (LiNeS, averaging with the champion, EMA), chosen by name
in a policy's `merge` list and applied in order."""

from pipelines.core.plugins import register
from pipelines.methods.merge.average import AverageConfig, average
from pipelines.methods.merge.ema import EmaConfig, ema
from pipelines.methods.merge.lines import LinesConfig, lines

register("merge", "lines", LinesConfig, lines)
register("merge", "average", AverageConfig, average)
register("merge", "ema", EmaConfig, ema)

__all__ = ["AverageConfig", "EmaConfig", "LinesConfig", "average", "ema", "lines"]
