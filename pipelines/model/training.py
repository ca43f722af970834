"""Admitted rows as training items for the update method.

Facts and instructions both become (prompt, target) pairs, trained with loss on the target only: an instruction's
prompt is its conversation rendered the way the model will be asked (the tokenizer's chat template when it has
one), its target the response. Documents become plain texts, trained with loss on every token.
"""

from __future__ import annotations

from typing import Any

from pipelines.core.rows import ContractRow, RowError, as_row
from pipelines.model.knowledge import Row, qa

INSTRUCTION = "instruction"
DOCUMENT = "document"
Message = dict[str, str]


def _typed(row: Row) -> ContractRow | None:
    """The row as its typed record, None when it is not a contract row (unusable for training)."""
    try:
        return as_row(row)
    except RowError:
        return None


def is_instruction(row: Row) -> bool:
    typed = _typed(row)
    return typed is not None and typed.kind == INSTRUCTION


def _messages(row: ContractRow) -> list[Message]:
    """The row's `messages` as plain role/content dicts (the typed record has checked every turn)."""
    return [{"role": m.role, "content": m.content} for m in row.messages or []]


def conversation(row: Row) -> tuple[list[Message], str] | None:
    """(turns before the response, response) of an instruction row, or None when it has no prompt or no response.

    A row without `response` whose messages end with an assistant turn uses that turn as the response; a row whose
    messages are malformed (a turn without content) is unusable too.
    """
    row = _typed(row)
    if row is None:
        return None
    turns = _messages(row)
    if not turns and row.prompt and row.prompt.strip():
        turns = [{"role": "user", "content": row.prompt}]
    response = row.response
    if not (isinstance(response, str) and response.strip()) and turns and turns[-1]["role"] == "assistant":
        turns, response = turns[:-1], turns[-1]["content"]
    if not turns or not isinstance(response, str) or not response.strip():
        return None
    return turns, response


def render_prompt(turns: list[Message], tokenizer, row_id: str = "?") -> str:
    """The prompt text the model continues with the response: chat template with the generation prompt, else the
    single user turn as written, else "role: content" lines."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # templates raise their own error types (unsupported roles, turn order)
            raise ValueError(f"instruction row {row_id!r}: the tokenizer's chat template refused its messages: {exc}") from exc
        return text  # a BOS the template writes is kept, and pipelines.model.lm.prompt_ids then adds no second one
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns)


def instruction_pair(row: Row, tokenizer) -> dict[str, Any] | None:
    """An instruction row as a QA dict (prompt rendered for this tokenizer, target = response); None if unusable."""
    parts = conversation(row)
    if parts is None:
        return None
    row = as_row(row)
    turns, response = parts
    return {"id": row.id, "prompt": render_prompt(turns, tokenizer, row.id), "target": response,
            "kind": INSTRUCTION, "fact_id": None, "subject_id": row.first_subject}


def instruction_pairs(rows: list[ContractRow], tokenizer) -> list[dict[str, Any]]:
    """The usable instruction rows among `rows`, as QA dicts."""
    pairs = (instruction_pair(r, tokenizer) for r in rows if is_instruction(r))
    return [p for p in pairs if p is not None]


def instruction_rows(rows: list[ContractRow], tokenizer) -> list[dict[str, Any]]:
    """Instruction rows with `prompt` rendered and `target` set to the response, every other field kept: what a
    selection method scores and picks from alongside the facts (and what a scrub finds by id and subject)."""
    out = []
    for row in rows:
        pair = instruction_pair(row, tokenizer) if is_instruction(row) else None
        if pair is not None:
            out.append({**row, "prompt": pair["prompt"], "target": pair["target"]})
    return out


def is_document(row: Row) -> bool:
    """A document row with text to train on."""
    typed = _typed(row)
    return typed is not None and typed.kind == DOCUMENT and bool((typed.text or "").strip())


def document_texts(rows: list[Row]) -> list[str]:
    """The text of each document row: continued pre-training data (loss on every token)."""
    return [as_row(r).text for r in rows if is_document(r)]


def training_item(row: Row) -> dict[str, Any]:
    """A selected row as the update method receives it: the QA dict plus its kind (the stopping rule tells
    facts, which must be recalled exactly, from instructions, whose responses are scored token by token)."""
    return {**qa(row), "kind": as_row(row).kind}
