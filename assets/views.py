"""The releases view: one asset whose latest materialization is always the registry as it stands.

Every step that changes a release (a cycle's release, a decision, a waiver, a rollback, a forget request) records a
fresh materialization of it, so the asset's page never shows a status that has since changed.
"""

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, MetadataValue, OpExecutionContext, asset

from assets.resources import MemgovResource
from pipelines.cycle.releases_view import releases_markdown, releases_view

RELEASES = AssetKey("releases")


def releases_metadata(ws, policy) -> dict:
    view = releases_view(ws, policy)
    return {
        "registry": MetadataValue.md(releases_markdown(view)),
        "champion": view.champion or "none",
        "pending": ", ".join(view.pending) or "nothing",
        "open_forget_requests": len(view.requests),
        "policy": view.policy,
    }


def publish_releases(context: OpExecutionContext, ws, policy) -> None:
    """Record the registry as it is now, after the change this run made."""
    context.log_event(AssetMaterialization(asset_key=RELEASES, metadata=releases_metadata(ws, policy),
                                           description="releases after this run's change"))


@asset(key=RELEASES, group_name="governance", deps=[AssetKey("release")])
def releases(context: AssetExecutionContext, memgov: MemgovResource) -> None:
    """Champion, candidates waiting for a decision (gates, changed facts, approvals still needed), open forget
    requests and the release that honours each. Refreshed by every decision; materialize it to re-read."""
    ws = memgov.workspace()
    context.add_output_metadata(releases_metadata(ws, memgov.load_policy()))
