"""Causal tracing on a deployed release: where its MLPs hold a fact (what `memgov edit trace` prints)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.deployment.artifacts import load_model
from pipelines.deployment.workspace import Workspace
from pipelines.methods.edit.trace import LayerTrace, Position, trace_layers
from pipelines.model.knowledge import current_facts, known_by, sample


@dataclass
class ReleaseTrace:
    release_id: str
    trace: LayerTrace
    facts: list[dict]  # what was traced: prompt, answer (the model's own), subject


def trace_release(ws: Workspace, release_id: str | None = None, *, prompt: str | None = None,
                  subject: str | None = None, answer: str | None = None, n_facts: int = 20, samples: int = 10,
                  window: int = 1, position: Position = "subject", seed: int = 0) -> ReleaseTrace:
    """Trace one fact (`prompt` and its `subject`; the answer is `answer`, else the model's greedy answer) or, without
    a prompt, up to `n_facts` of the deployment's current facts that name their subject and that the release
    recalls. Raises ValueError naming what is missing."""
    from pipelines.model.lm import answer_budget, greedy_answers

    release_id = release_id or ws.registry.champion()
    release = ws.registry.get(release_id) if release_id else None
    if release is None:
        raise ValueError(f"no release {release_id!r}; fix: name one `memgov status` lists")
    model, tokenizer = load_model(ws, release.model)
    if prompt is not None:
        if not subject:
            raise ValueError("--subject is required with --prompt: tracing corrupts the subject's tokens")
        said = answer or greedy_answers(model, tokenizer, [prompt], answer_budget(tokenizer, "x" * 24))[0]
        facts = [{"prompt": prompt, "target": said, "subject": subject}]  # spaced as every answer is (lm.answer_text)
    else:
        rows = [r for r in current_facts(ws.data.rows("admitted")).values() if r.subject and r.subject in r.prompt]
        known = known_by(model, tokenizer, sample(rows, 4 * n_facts, seed=seed))[:n_facts]
        if not known:
            raise ValueError("no current fact of this deployment names a subject that its prompt contains and that "
                             f"{release_id} recalls; fix: trace one with --prompt and --subject")
        facts = [{"prompt": r.prompt, "target": r.target, "subject": r.subject} for r in known]
    trace = trace_layers(model, tokenizer, facts, samples=samples, window=window, position=position, seed=seed)
    return ReleaseTrace(release_id, trace, facts)
