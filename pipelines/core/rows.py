"""One typed record per row kind of the data contract (`policies/contract.json`), used from admission onward.

The JSON Schema is what users read; these records are what the engine reads. `contract_disagreements` compares the
two field by field (names, JSON types, the fields each kind requires), admission refuses to start when they differ,
and a unit test runs the same comparison, so the two cannot drift apart.

A record keeps every column the user wrote: contract fields are typed attributes, any other column (a `doc_id`, a
`subject_id`, a column of the user's own) stays readable with `extra()`. `to_json()` gives back the row as stored,
with the fields admission derived (the kind, a fact id). Records are also read-only mappings over that JSON form, so
`{**row, "prompt": rendered}` still builds a derived item; the engine reads contract fields as attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

KINDS = ("fact", "instruction", "document", "edit", "retention", "general", "locality", "unseen", "general_replay")
Kind = Literal["fact", "instruction", "document", "edit", "retention", "general", "locality", "unseen",
               "general_replay"]
# Kinds that ask a question with one right answer (scored by exact match): each has a fact id once admitted.
QUESTION_KINDS = ("fact", "edit", "retention", "locality", "unseen")
_WRITTEN = "__written__"  # carries, through validation, the nulls a row was written with
_ABSENT = "__absent__"  # a string, so a pickled record keeps its meaning
_DEFAULTABLE = ("kind", "subject_ids", "paraphrases")  # fields with a non-null default that a row may leave null


class Message(BaseModel):
    """One turn of an instruction row's conversation."""

    model_config = ConfigDict(extra="allow", frozen=True)
    role: str
    content: str


def default_kind(row: Mapping[str, Any]) -> str:
    """The contract's default: a fact when the row has a prompt and a target, else a document."""
    return "fact" if _filled(row.get("prompt")) and _filled(row.get("target")) else "document"


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


class ContractRow(BaseModel, Mapping[str, Any]):
    """The fields every kind may carry; a subclass per kind says which it requires (`requires`: alternatives of
    which one must be complete, read from the contract's if/then rules)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    requires: ClassVar[tuple[tuple[str, ...], ...]] = ()

    _written: dict[str, Any] = PrivateAttr(default_factory=dict)

    id: str = Field(min_length=1)
    kind: Kind
    text: str | None = None
    source: str | None = None
    license: str | None = None
    subject_ids: list[str] = Field(default_factory=list)
    subject: str | None = None
    relation: str | None = None
    prompt: str | None = None
    target: str | None = None
    previous_target: str | None = None
    paraphrases: list[str] = Field(default_factory=list)
    fact_id: str | None = None
    response: str | None = None
    messages: list[Message] | None = None
    pii: bool | dict[str, bool] | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_as_written(cls, data: Any) -> Any:
        """A null (or an empty kind) means absent, as admission reads it: the field takes its default and the row is
        stored back as written."""
        if not isinstance(data, Mapping):
            return data
        written = {k: data[k] for k in _DEFAULTABLE if k in data and data[k] in (None, "")}
        if not written and data.get("kind"):
            return data
        out = {k: v for k, v in data.items() if k not in written}
        out.setdefault("kind", default_kind(data))
        return {**out, _WRITTEN: {**written, **({} if "kind" in data else {"kind": _ABSENT})}}

    @model_validator(mode="after")
    def _required_for_kind(self) -> ContractRow:
        written = (self.model_extra or {}).pop(_WRITTEN, {})
        self._written = written
        if written.get("kind") == _ABSENT:  # a defaulted kind is read, never stored
            self.__pydantic_fields_set__.discard("kind")
        if self.requires and not any(all(_filled(getattr(self, f)) for f in option) for option in self.requires):
            wanted = " or ".join(", ".join(option) for option in self.requires)
            raise ValueError(f"kind '{self.kind}' requires {wanted} (policies/contract.json)")
        return self

    # --- reading ---------------------------------------------------------------------------------------------------
    def extra(self, name: str, default: Any = None) -> Any:
        """A column outside the contract, as the user wrote it (None when the row has no such column)."""
        return (self.model_extra or {}).get(name, default)

    @property
    def is_question(self) -> bool:
        """A row with a prompt and a target (what recall is scored on)."""
        return _filled(self.prompt) and _filled(self.target)

    @property
    def first_subject(self) -> str | None:
        return self.subject_ids[0] if self.subject_ids else None

    def to_json(self) -> dict[str, Any]:
        """The row as stored: the columns it arrived with plus those admission derived, nothing invented."""
        return dict(self._json)

    @cached_property
    def _json(self) -> dict[str, Any]:
        stored = self.model_dump(mode="json", exclude_unset=True)
        return {**stored, **{k: v for k, v in self._written.items() if v != _ABSENT}}

    # --- the read-only mapping view (derived items are built with {**row, ...}) -------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping iterates its keys, not pydantic's pairs
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)

    def __contains__(self, key: object) -> bool:
        return key in self._json

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ContractRow):
            return self._json == other._json
        if isinstance(other, Mapping):
            return self._json == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so unhashable like one


class FactRow(ContractRow):
    requires = (("prompt", "target"),)
    kind: Literal["fact"]


class UnseenRow(ContractRow):
    requires = (("prompt", "target"),)
    kind: Literal["unseen"]


class EditRow(ContractRow):
    requires = (("prompt", "target", "previous_target"),)
    kind: Literal["edit"]


class RetentionRow(ContractRow):
    """Written out (prompt and target) or naming an admitted fact by its fact_id."""

    requires = (("prompt", "target"), ("fact_id",))
    kind: Literal["retention"]


class LocalityRow(ContractRow):
    requires = (("prompt", "target"), ("fact_id",))
    kind: Literal["locality"]


class InstructionRow(ContractRow):
    kind: Literal["instruction"]


class DocumentRow(ContractRow):
    kind: Literal["document"]


class GeneralRow(ContractRow):
    kind: Literal["general"]


class GeneralReplayRow(ContractRow):
    kind: Literal["general_replay"]


ROW_TYPES: dict[str, type[ContractRow]] = {
    t.model_fields["kind"].annotation.__args__[0]: t  # type: ignore[union-attr]
    for t in (FactRow, InstructionRow, DocumentRow, EditRow, RetentionRow, GeneralRow, LocalityRow, UnseenRow,
              GeneralReplayRow)
}
_ADAPTER: TypeAdapter[ContractRow] = TypeAdapter(ContractRow)


class RowError(ValueError):
    """A stored or supplied row that is not a contract row; names the row and the field."""


def as_row(data: Mapping[str, Any] | ContractRow) -> ContractRow:
    """The typed record of one row (its kind's class); a record is returned as it is."""
    if isinstance(data, ContractRow):
        return data
    kind = data.get("kind") or default_kind(data)
    cls = ROW_TYPES.get(kind) if isinstance(kind, str) else None
    try:
        return (cls or ContractRow).model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
        raise RowError(f"row {data.get('id')!r} is not a contract row ({problems}); fix: see policies/contract.json"
                       ) from None


def as_rows(rows: Iterable[Mapping[str, Any] | ContractRow]) -> list[ContractRow]:
    return [as_row(r) for r in rows]


def requirements() -> dict[str, tuple[tuple[str, ...], ...]]:
    """The fields each kind requires (alternatives), as the records enforce them."""
    return {kind: cls.requires for kind, cls in ROW_TYPES.items() if cls.requires}


# --- agreement with the JSON Schema ------------------------------------------------------------------------------

def _schema_types(schema: Mapping[str, Any]) -> set[str]:
    if "enum" in schema:
        return {"string"}
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return set(kinds)
    out: set[str] = set()
    for option in schema.get("anyOf", []):
        out |= _schema_types(option)
    if "$ref" in schema or "const" in schema:
        out.add("object" if "$ref" in schema else "string")
    return out


def contract_disagreements(contract: Mapping[str, Any]) -> list[str]:
    """Where the JSON Schema and these records differ (empty when they agree): kinds, field names, each field's
    JSON types (null aside: a field the contract does not require may be absent), and the fields each kind requires."""
    out: list[str] = []
    props: Mapping[str, Any] = contract.get("properties", {})
    if tuple(props.get("kind", {}).get("enum", ())) != KINDS:
        out.append(f"kinds: contract {props.get('kind', {}).get('enum')} vs records {list(KINDS)}")
    ours = ContractRow.model_json_schema()["properties"]
    fields = set(ContractRow.model_fields)
    for name in sorted(set(props) - fields):
        out.append(f"field '{name}' is in the contract but not in the records")
    for name in sorted(fields - set(props)):
        out.append(f"field '{name}' is in the records but not in the contract")
    for name in sorted(set(props) & fields - {"kind"}):
        theirs, mine = _schema_types(props[name]) - {"null"}, _schema_types(ours[name]) - {"null"}
        if theirs != mine:
            out.append(f"field '{name}': contract type {sorted(theirs)} vs records {sorted(mine)}")
    declared: dict[str, tuple[tuple[str, ...], ...]] = {}
    for rule in contract.get("allOf", []):
        kind, then = rule["if"]["properties"]["kind"], rule["then"]
        options = tuple(tuple(o["required"]) for o in then.get("anyOf", [])) or (tuple(then.get("required", ())),)
        for name in kind.get("enum", [kind.get("const")]):
            declared[name] = options
    if declared != requirements():
        out.append(f"required fields per kind: contract {declared} vs records {requirements()}")
    return out
