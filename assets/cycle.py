"""The cycle's assets, one per stage of the loop. Each loads its inputs, calls one engine function, reports metadata."""

from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from assets.resources import GPU_TAGS, MemgovResource, shared_embedder
from pipelines.cycle import evaluation, governance, stages

GROUP = "cycle"

class BatchConfig(Config):
    batch: str = ""  # a file in the inbox (or a path); empty = the oldest unprocessed batch

def _out(value: dict, context: AssetExecutionContext, **extra) -> Output:
    meta = {"cycle": value.get("cycle", ""), "seconds": value.get("seconds", 0.0), **extra}
    context.log.info(f"{context.asset_key.to_user_string()}: {meta}")
    return Output(value, metadata={k: v for k, v in meta.items() if v is not None})

@asset(group_name=GROUP)
def admitted_batch(context: AssetExecutionContext, config: BatchConfig, memgov: MemgovResource) -> Output:
    """One arriving batch validated by the policy's Great Expectations suite; failing rows are quarantined with reasons."""
    ws = memgov.workspace()
    value = stages.admit(ws, memgov.load_policy(), config.batch or None, run_id=context.run_id)
    return _out(value, context, admitted=value["admitted"], quarantined=value["quarantined"],
                forget_requests_scrubbed=MetadataValue.json(value["forget_requests_scrubbed"]),
                expectations=MetadataValue.md(value["expectations_md"]), policy=value["policy"],
                batch_hash=value["batch_hash"])

def _nothing_admitted(context: AssetExecutionContext, admitted: dict) -> bool:
    if stages.has_new_data(admitted):
        return False
    context.log.info(f"batch {admitted['batch']}: no row admitted ({admitted['quarantined']} quarantined); "
                     "no candidate is built this cycle")
    return True

@asset(group_name=GROUP, output_required=False)
def selected_samples(context: AssetExecutionContext, admitted_batch: dict, memgov: MemgovResource):
    """What is worth training on: deduplicated, scored by the champion's loss, clustered by skill, plus replay."""
    if _nothing_admitted(context, admitted_batch):
        return
    value = stages.select(memgov.workspace(), memgov.load_policy(), admitted_batch, progress=memgov.progress)
    yield _out(value, context, method=value["method"], samples=value["n_samples"], replay=value["n_replay"],
                pruned=value["n_pruned"], edits=value["n_edits"], instructions=value.get("n_instructions"),
                documents=value.get("n_documents"), prune_reasons=MetadataValue.json(value["prune_reasons"]))

@asset(group_name=GROUP, op_tags=GPU_TAGS)
def candidate_update(context: AssetExecutionContext, selected_samples: dict, memgov: MemgovResource) -> Output:
    """A PEFT adapter trained from the champion on the selected samples (GPU job in production)."""
    value = stages.update(memgov.workspace(), memgov.load_policy(), selected_samples, progress=memgov.progress)
    return _out(value, context, method=value.get("method"), adapter=value.get("adapter") or "none",
                stats=MetadataValue.json(value.get("stats", {})))

@asset(group_name=GROUP, op_tags=GPU_TAGS)
def candidate_model(context: AssetExecutionContext, candidate_update: dict, memgov: MemgovResource) -> Output:
    """Champion + adapter, with queued knowledge edits and pending forget requests applied (GPU job in production)."""
    value = stages.candidate_model(memgov.workspace(), memgov.load_policy(), candidate_update, progress=memgov.progress)
    return _out(value, context, model=value["model"], edits=len(value["edits"]),
                forget_requests=MetadataValue.json(value["honoured"]))

@asset(group_name=GROUP, output_required=False)
def candidate_index(context: AssetExecutionContext, admitted_batch: dict, memgov: MemgovResource):
    """The FAISS index refreshed incrementally: this batch's documents upserted, tombstoned documents removed."""
    if _nothing_admitted(context, admitted_batch):
        return
    value = stages.candidate_index(memgov.workspace(), memgov.load_policy(), admitted_batch, shared_embedder())
    yield _out(value, context, snapshot=value["index_snapshot"], documents=value["n_docs"], added=value["added"],
                removed=value["removed"], fingerprint=value["fingerprint"])

@asset(group_name=GROUP)
def evaluation_card(context: AssetExecutionContext, candidate_update: dict, candidate_model: dict,
                    candidate_index: dict, memgov: MemgovResource) -> Output:
    """Every suite on candidate and champion, the gates' verdicts, plots; registers the candidate release."""
    ws = memgov.workspace()
    value = evaluation.evaluate(ws, memgov.load_policy(), candidate_update, candidate_model, candidate_index,
                                shared_embedder(), run_id=context.run_id)
    plot = f"{value['card_dir']}/deltas.png"
    return _out(value, context, release=value["release_id"], passed=value["passed"],
                card=MetadataValue.md(value["card_md"]), card_dir=MetadataValue.path(value["card_dir"]),
                deltas_plot=MetadataValue.path(plot))

@asset(group_name=GROUP)
def release(context: AssetExecutionContext, evaluation_card: dict, memgov: MemgovResource) -> Output:
    """The release decision: auto-approved and promoted where policy allows, otherwise waiting for an approver."""
    value = governance.release_stage(memgov.workspace(), memgov.load_policy(), evaluation_card, run_id=context.run_id)
    return _out(value, context, release=value["release_id"], status=value["status"], champion=value["champion"] or "")
