"""How a diagnosis reads: Markdown (printed, diagnosis.md, `namegen diagnose`, reports) and a short card for
TensorBoard's Text tab (one row per finding)."""

from __future__ import annotations

from typing import Any

# a Diagnosis and a Finding (engine.py), duck-typed: engine renders through this module, so it imports nothing back
Diagnosis = Finding = Any

TEXT_TAG = "diagnosis"  # add_text appends "/text_summary": TensorBoard lists it as diagnosis/text_summary
MAX_LAYERS = 6


def where(f: Finding, most: int = MAX_LAYERS) -> str:
    if len(f.layers) > most:
        shown = ", ".join(f.layers[:most - 1]) + f", ... {f.layers[-1]} ({len(f.layers)} in all)"
    else:
        shown = ", ".join(f.layers)
    steps = f" at step{'s' if len(f.steps) > 1 else ''} {', '.join(map(str, f.steps))}" if f.steps else ""
    return (shown or "the whole network") + steps


def fix_text(f: Finding) -> str:
    overrides = " ".join(f.remedy.overrides)
    return f"`{overrides}`: {f.remedy.text}" if overrides else f.remedy.text


def coverage_line(d: Diagnosis) -> str:
    line = f"Checked: {', '.join(d.checked) or 'nothing'}"
    if d.missing:
        line += "; not checked: " + ", ".join(f"{rule} (no {reads})" for rule, reads in d.missing)
    if d.not_applicable:
        line += f"; not applicable to this model: {', '.join(d.not_applicable)}"
    return line + "."


def markdown(d: Diagnosis, title: str | None = None, level: int = 1) -> str:
    h = "#" * level
    status = f" (run status: {d.status})" if d.status and d.status != "ok" else ""
    lines = [f"{h} Diagnosis{': ' + title if title else ''}", "", f"**Health: {d.health}**{status}", ""]
    for n, f in enumerate(d.findings, 1):
        lines += [f"{h}# {n}. {f.name}: {f.title}", "",
                  f"- **Where**: {where(f)}", f"- **Measured**: {f.measured}", f"- **Healthy**: {f.healthy}",
                  f"- **Why it counts**: {f.why}", f"- **Fix**: {fix_text(f)}"]
        lines += [f"- **Not suggested**: {'; '.join(f.remedy.skipped)}"] if f.remedy.skipped else []
        lines.append("")
    if d.fix:
        lines += [f"All fixes at once: `namegen diagnose RUN --fix` (overrides `{' '.join(d.fix)}`).", ""]
    if d.notes:
        lines += [f"{h}# Notes (seen, but did not hurt this run)", ""]
        lines += [f"- {f.name}: {f.measured}. {f.why[:1].upper() + f.why[1:]}." for f in d.notes] + [""]
    if not d.findings and d.checked:
        lines += ["No findings.", ""]
    lines.append(coverage_line(d))
    return "\n".join(lines) + "\n"


def card(d: Diagnosis, title: str, val_loss: float | None = None) -> str:
    """The Text tab's card: the health first (bold, with the val loss, so the worst run stands out), one table row
    per finding, the notes in one line each."""
    # words, not emoji: a browser without an emoji font (headless Chromium here) draws those as empty boxes
    mark = "" if d.healthy else ("NOT FULLY CHECKED · " if not d.findings else "UNHEALTHY · ")
    loss = f" · val loss {val_loss:.4f}" if val_loss is not None else ""
    lines = [f"{mark}**{title}: {d.health}**{loss}", ""]
    if d.findings:
        lines += ["| finding | where | measured | fix |", "|---|---|---|---|"]
        for f in d.findings:
            overrides = " ".join(f.remedy.overrides)
            first, *rest = f.measured.split("; ")  # the card stays short: the first measurement, the rest in diagnosis.md
            cells = [f.name, where(f, most=2), first + (" …" if rest else ""),
                     f"`{overrides}`" if overrides else f.remedy.text]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += [f"note: {f.name}: {f.why}" for f in d.notes]
    return "\n".join(lines) + "\n"
