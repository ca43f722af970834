"""Forget requests (may import: core … deployment): resolve a selector, scrub every store at once, tombstone, taint lineage.

Retrieval-side deletion (data tables, every kept index snapshot) happens here, immediately. Model-side
forgetting happens in the next candidate (or an urgent unlearning-only cycle) and is verified there.
"""

from pipelines.forget.plan import ForgetPlan, resolve_selector
from pipelines.forget.process import (
    PendingForget,
    confirm_request,
    dry_run_report,
    honour_pending_requests,
    pending_scrubs,
    process_request,
    retry_request,
)

__all__ = ["ForgetPlan", "PendingForget", "confirm_request", "dry_run_report", "honour_pending_requests",
           "pending_scrubs", "process_request", "resolve_selector", "retry_request"]
