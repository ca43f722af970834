"""The cycle's assets, one per stage of the loop. Each loads its inputs, calls one engine function, reports metadata."""

from pathlib import Path

from dagster import AssetExecutionContext, Config, MetadataValue, OpExecutionContext, Output, asset

from assets.resources import GPU_TAGS, MemgovResource, shared_embedder
from evals.card import card_markdown_for_ui
from pipelines.cycle import evaluation, recovery, stages
from pipelines.cycle import lock as cycle_lock
from pipelines.cycle import release_stage as release_step
from pipelines.cycle.records import (
    Admitted,
    CandidateIndex,
    CandidateModel,
    Measurement,
    ReleaseOutcome,
    Selected,
    Updated,
)
from pipelines.methods.selection.report import selection_markdown

GROUP = "cycle"


class BatchConfig(Config):
    batch: str = ""  # a file in the inbox (or a path); empty = the oldest unprocessed batch


def _out(value, context: AssetExecutionContext, **extra) -> Output:
    meta = {"cycle": value.cycle, "seconds": value.seconds, **extra}
    context.log.info(f"{context.asset_key.to_user_string()}: {meta}")
    return Output(value, metadata={k: v for k, v in meta.items() if v is not None})


@asset(group_name=GROUP)
def admitted_batch(context: AssetExecutionContext, config: BatchConfig, memgov: MemgovResource) -> Output[Admitted]:
    """One arriving batch validated by the policy's Great Expectations suite; failing rows are quarantined with reasons."""
    ws = memgov.workspace()
    held = cycle_lock.acquire(ws, "governed_cycle", run_id=context.run.run_id)  # CycleBusy: another cycle runs
    if held.interrupted:
        mark_interrupted(context, ws, held.interrupted)
    for line in recovery.recover(ws, memgov.load_policy(), run_id=context.run.run_id):  # what a crash left half-done
        context.log.warning(f"recovered: {line}")
    value = stages.admit(ws, memgov.load_policy(), config.batch or None, run_id=context.run.run_id)
    if not value.has_new_data:  # the batch's outcome: quarantined, nothing to train on
        stages.mark_processed(ws, value.batch)
    return _out(value, context, admitted=value.admitted, quarantined=value.quarantined,
                forget_requests_scrubbed=MetadataValue.json(value.forget_requests_scrubbed),
                expectations=MetadataValue.md(value.expectations_md), policy=value.policy, batch_hash=value.batch_hash)


def _nothing_admitted(context: AssetExecutionContext, admitted: Admitted) -> bool:
    if admitted.has_new_data:
        return False
    context.log.info(f"batch {admitted.batch}: no row admitted ({admitted.quarantined} quarantined); "
                     "no candidate is built this cycle")
    return True


def mark_interrupted(context: AssetExecutionContext | OpExecutionContext, ws, holder: dict) -> None:
    """A run that died holding the cycle lock (SIGKILL, lost node) is marked failed, not left 'started' for ever."""
    from dagster import DagsterRunStatus

    run = context.instance.get_run_by_id(holder["run_id"])
    if run is None or run.status not in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING):
        return
    message = (f"interrupted: its process (pid {holder.get('pid')}) ended without finishing its "
               f"{holder.get('holder', 'work')}; found by run {context.run.run_id}, which took the lock after it")
    context.instance.report_run_failed(run, message)
    ws.log.append("system:cycle", "cycle.interrupted", holder["run_id"], reason=message, run_id=context.run.run_id)
    context.log.warning(f"run {holder['run_id']} {message}")


@asset(group_name=GROUP, output_required=False)
def selected_samples(context: AssetExecutionContext, admitted_batch: Admitted, memgov: MemgovResource):
    """What is worth training on: deduplicated, scored by the champion's loss, clustered by skill, plus replay."""
    if _nothing_admitted(context, admitted_batch):
        return
    value: Selected = stages.select(memgov.workspace(), memgov.load_policy(), admitted_batch, progress=memgov.progress)
    yield _out(value, context, method=value.method, samples=value.n_samples, replay=value.n_replay,
               pruned=value.n_pruned, edits=value.n_edits, instructions=value.n_instructions,
               documents=value.n_documents, prune_reasons=MetadataValue.json(value.prune_reasons),
               replay_tokens=value.replay_tokens or 0, general_tokens=value.general_tokens,
               report=MetadataValue.md(selection_markdown(value.method, value.stats, value.prune_reasons)))


@asset(group_name=GROUP, op_tags=GPU_TAGS)
def candidate_update(context: AssetExecutionContext, selected_samples: Selected, memgov: MemgovResource) -> Output[Updated]:
    """A PEFT adapter trained from the champion on the selected samples (GPU job in production)."""
    value = stages.update(memgov.workspace(), memgov.load_policy(), selected_samples, progress=memgov.progress)
    return _out(value, context, method=value.method, adapter=value.adapter or "none",
                stats=MetadataValue.json(value.stats))


@asset(group_name=GROUP, op_tags=GPU_TAGS)
def candidate_model(context: AssetExecutionContext, candidate_update: Updated,
                    memgov: MemgovResource) -> Output[CandidateModel]:
    """Champion + adapter, with queued knowledge edits and pending forget requests applied (GPU job in production)."""
    value = stages.candidate_model(memgov.workspace(), memgov.load_policy(), candidate_update, progress=memgov.progress)
    return _out(value, context, model=value.model, edits=len(value.edits),
                forget_requests=MetadataValue.json(value.honoured))


@asset(group_name=GROUP, output_required=False)
def candidate_index(context: AssetExecutionContext, admitted_batch: Admitted, memgov: MemgovResource):
    """The FAISS index refreshed incrementally: this batch's documents upserted, tombstoned documents removed."""
    if _nothing_admitted(context, admitted_batch):
        return
    value: CandidateIndex = stages.candidate_index(memgov.workspace(), memgov.load_policy(), admitted_batch,
                                                   shared_embedder())
    yield _out(value, context, snapshot=value.index_snapshot, documents=value.n_docs, added=value.added,
               removed=value.removed, fingerprint=value.fingerprint)


@asset(group_name=GROUP)
def evaluation_card(context: AssetExecutionContext, candidate_update: Updated, candidate_model: CandidateModel,
                    candidate_index: CandidateIndex, memgov: MemgovResource) -> Output[Measurement]:
    """Every suite on candidate and champion on the same sets, and the card with the gates' verdicts and plots."""
    value = evaluation.measure(memgov.workspace(), memgov.load_policy(), candidate_model,
                               candidate_index.index_snapshot, shared_embedder(), candidate_update.history,
                               candidate_update.stats.get("probe_tasks_before"))
    return _out(value, context, card=MetadataValue.md(value.card_md), card_digest=value.card_digest)


@asset(group_name=GROUP)
def release(context: AssetExecutionContext, evaluation_card: Measurement, memgov: MemgovResource) -> Output[ReleaseOutcome]:
    """The candidate registered, then rejected by its gates, promoted where policy allows, or waiting for an approver."""
    ws = memgov.workspace()
    value = release_step.release_stage(ws, memgov.load_policy(), evaluation_card, run_id=context.run.run_id)
    return _out(value, context, release=value.release_id, status=value.status, champion=value.champion or "",
                passed=value.passed, verdict=value.summary,
                card=MetadataValue.md(card_markdown_for_ui(Path(value.card_dir), value.release_id)))
