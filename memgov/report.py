"""Human-readable summaries of cycles for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from assets.runner import output_of


def cycle_outputs(result) -> dict:
    names = ("admitted_batch", "selected_samples", "candidate_update", "candidate_model", "candidate_index",
             "evaluation_card", "release")
    return {n: output_of(result, n) for n in names}


def print_cycle(console: Console, ws, result) -> dict:
    outs = cycle_outputs(result)
    adm, ev, rel = outs["admitted_batch"], outs["evaluation_card"], outs["release"]
    if adm:
        console.print(f"[bold]cycle {adm.cycle}[/bold]: {adm.admitted} rows admitted, {adm.quarantined} quarantined "
                      f"{adm.quarantine_reasons or ''}")
    if ev:
        table = Table(title=f"gates for {rel.release_id if rel else ev.card['release_id']}")
        for col in ("metric", "value", "champion", "threshold", "verdict"):
            table.add_column(col)
        for v in ev.card["decision"]["verdicts"]:
            table.add_row(v["metric"], _fmt(v["value"]), _fmt(v.get("champion_value")), v["threshold"],
                          "[green]pass[/green]" if v["passed"] else "[red]FAIL[/red]")
        console.print(table)
    if rel:
        console.print(f"evaluation card: {rel.card_dir}/card.md")
        console.print(f"release: {rel.summary}; champion now: {ws.registry.champion()}")
    else:
        console.print(f"release: not released; champion: {ws.registry.champion()}")
    return outs


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
