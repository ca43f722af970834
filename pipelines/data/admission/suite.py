"""Admission checks as data, and their execution through Great Expectations.

Checks are described as plain records first so the suite can be listed, hashed and rendered without importing
Great Expectations (which costs seconds); GX is imported only when a batch is actually validated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROW_KEY = "_row"  # positional key: ids can be missing or duplicated, so only the position addresses a row unambiguously
ROWS = "rows"
SUBJECT_LINKS = "subject_links"

_GX_CLASSES = {
    "expect_column_values_to_not_be_null": "ExpectColumnValuesToNotBeNull",
    "expect_column_values_to_be_unique": "ExpectColumnValuesToBeUnique",
    "expect_column_value_lengths_to_be_between": "ExpectColumnValueLengthsToBeBetween",
    "expect_column_values_to_be_in_set": "ExpectColumnValuesToBeInSet",
    "expect_column_values_to_not_match_regex": "ExpectColumnValuesToNotMatchRegex",
    "expect_column_values_to_not_be_in_set": "ExpectColumnValuesToNotBeInSet",
}


@dataclass(frozen=True)
class Check:
    """One expectation plus the sentence a quarantined row gets when it fails it.

    A check GX cannot express directly (a type rule, a Luhn test) validates a derived column: `derive` turns the
    row's `row_field` value into that column's value, and `reason` still gets the original field value.
    """

    name: str
    column: str
    kwargs: dict[str, Any]
    description: str
    reason: Callable[[Any], str]  # failing value -> human-readable reason
    frame: str = ROWS
    row_field: str | None = None  # the row field behind a derived column
    derive: Callable[[Any], Any] | None = None  # plain field value -> derived column value
    whole_row: bool = False  # derive and reason get the whole row (a rule over several fields), not one value

    @property
    def field_name(self) -> str:
        """The row field a reviewer has to fix when this check fails."""
        return self.row_field or self.column


@dataclass
class CheckOutcome:
    check: Check
    success: bool
    unexpected_count: int
    rows: list[int] = field(default_factory=list)  # positions of failing rows


def run_checks(frames: dict[str, Any], checks: list[Check], suite_name: str) -> list[CheckOutcome]:
    """Validate each frame with its checks in one ephemeral GX context; failing rows come back by position."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(f"{suite_name}-source")
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_KEY]}
    outcomes: list[CheckOutcome] = []
    for frame_name, frame in frames.items():
        mine = [(i, c) for i, c in enumerate(checks) if c.frame == frame_name]
        if not mine or frame is None:
            continue
        batch_def = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}-{frame_name}"))
        for index, check in mine:
            cls = getattr(gxe, _GX_CLASSES[check.name])
            suite.add_expectation(cls(column=check.column, meta={"check": index}, **check.kwargs))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}-{frame_name}", data=batch_def, suite=suite)
        )
        if len(frame) == 0:
            outcomes.extend(CheckOutcome(c, True, 0) for _, c in mine)
            continue
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        for res in result.results:
            check = checks[int(res.expectation_config.meta["check"])]
            info = res.exception_info or {}
            if info.get("raised_exception"):
                # An expectation that crashed checked nothing: admitting the batch anyway would be unsafe.
                raise RuntimeError(
                    f"admission check {check.name} on column '{check.column}' failed to run: "
                    f"{info.get('exception_message')}"
                )
            rows = sorted({int(item[ROW_KEY]) for item in res.result.get("unexpected_index_list") or []})
            outcomes.append(CheckOutcome(check, bool(res.success), int(res.result.get("unexpected_count") or 0), rows))
    order = {id(c): i for i, c in enumerate(checks)}
    outcomes.sort(key=lambda o: order[id(o.check)])
    return outcomes
