"""One table of several signatures on several data sets (paper 000 Table 6 layout).

:func:`signature_table` turns evaluation results (one :class:`~.evaluate.EvalResult` per
signature and data set, each with its settings) into Markdown: one row per evaluated
setting with ``MAP / P@20 / P@R`` per data set, the numbers the papers publish for the same
signatures and data sets beside them, then per-category AP, one table per data set, and what
each row ran. ``semcbir eval --signature all --dataset corel1k msrc`` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .evaluate import EvalResult

__all__ = ["TableColumn", "signature_table"]


@dataclass
class TableColumn:
    """One data-set column: its title and the results of every signature on it."""

    title: str
    results: list[EvalResult] = field(default_factory=list)

    def labelled(self) -> EvalResult:
        """The first result that used label maps (the column's label source), else the
        first."""
        return next((r for r in self.results
                     if r.settings.get("segmentation") != "image files only"), self.results[0])


def _cut(r: Any) -> int | None:
    """The P@k shown: P@20 (paper 000 Table 7) when measured, else the largest k."""
    ks = list(r.p_at_k)
    return 20 if 20 in ks else (max(ks) if ks else None)


def _rows(columns: Sequence[TableColumn]) -> list[tuple[str, str, str]]:
    """``(signature name, setting label, row label)`` of every evaluated setting, in first
    appearance order over the columns."""
    out: list[tuple[str, str, str]] = []
    for col in columns:
        for res in col.results:
            title = res.signature_class.title
            for r in res.results:
                key = (res.signature, r.label, f"{title}, {r.label}")
                if key not in out:
                    out.append(key)
    return out


def _find(col: TableColumn, sig: str, label: str) -> Any:
    for res in col.results:
        if res.signature == sig:
            for r in res.results:
                if r.label == label:
                    return r
    return None


def _published(columns: Sequence[TableColumn]) -> list[tuple[str, list[str]]]:
    """Published rows (one cell per column, '-' where a paper gives none); a row with one
    value per setting (paper 000 Table 3 per number of blocks) shows its best."""
    rows: dict[str, list[str]] = {}
    for j, col in enumerate(columns):
        for res in col.results:
            title = res.signature_class.title
            for label, vals in (res.published().get("rows") or {}).items():
                if isinstance(vals, (list, tuple)):
                    nums = [v for v in vals if v is not None]
                    if not nums:
                        continue
                    text, label = f"{max(nums):.2f}", f"{label} (best)"
                else:
                    text = f"{vals:.2f}"
                # labels are a signature's own (SBoVP and hybrid both have "Mseg KAZE")
                rows.setdefault(f"published, {title}: {label}", ["-"] * len(columns))[j] = text
    return list(rows.items())


def signature_table(columns: Sequence[TableColumn], *, command: str | None = None) -> str:
    """Markdown of several signatures' results on several data sets (see the module).

    Parameters
    ----------
    columns : sequence of TableColumn
        One per data set (or label source), each with one result per signature.
    command : str, optional
        The command that made the numbers, written under the first table.
    """
    if not columns or not any(c.results for c in columns):
        raise ValueError("signature_table needs at least one column with results")
    rows = _rows(columns)
    cut = next((_cut(r) for c in columns for res in c.results for r in res.results), None)
    p = f"P@{cut}" if cut else "P@k"
    head = f"| signature | {' | '.join(c.title for c in columns)} |"
    lines = [(f"MAP / {p} / P@R, every image a query unless the settings below say otherwise; "
              "published rows give MAP."), "", head,
             "|" + "---|" * (len(columns) + 1)]
    for sig, label, text in rows:
        cells = []
        for col in columns:
            r = _find(col, sig, label)
            cells.append("-" if r is None else
                         f"{r.map:.3f} / {r.p_at_k.get(cut, float('nan')):.3f} / {r.p_at_r:.3f}")
        lines.append(f"| {text} | {' | '.join(cells)} |")
    for name, cells in _published(columns):
        lines.append(f"| {name} | {' | '.join(cells)} |")
    if command:
        lines += ["", f"Made by `{command}`."]
    for col in columns:
        cats: list[str] = []
        for res in col.results:
            for r in res.results:
                cats += [k for k in r.per_category_ap if k not in cats]
        if not cats:
            continue
        lines += ["", f"Per-category AP, {col.title}:", "",
                  f"| signature | {' | '.join(cats)} |", "|" + "---|" * (len(cats) + 1)]
        for sig, label, text in rows:
            r = _find(col, sig, label)
            if r is not None:
                vals = [f"{r.per_category_ap[c]:.2f}" if c in r.per_category_ap else "-"
                        for c in cats]
                lines.append(f"| {text} | {' | '.join(vals)} |")
    lines += ["", "Settings:", ""]
    seen: set[str] = set()
    for col in columns:
        for res in col.results:
            title = res.signature_class.title
            for sig, r in zip(res.signatures, res.results):
                key = f"{title}, {r.label}"
                if key not in seen:
                    seen.add(key)
                    lines.append(f"- {key}: {sig.describe()}")
        if col.results:
            lines.append(f"- {col.labelled().run_line()}")
    return "\n".join(lines) + "\n"
