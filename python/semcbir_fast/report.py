"""Evaluation reports: Markdown + JSON + PNG plots + an HTML gallery, in one folder.

:func:`write_report` turns an :class:`~semcbir_fast.eval.evaluate.EvalResult` into::

    DIR/report.md            settings, versions, one column per setting (SBS: paper 000
                             Table 3 layout with the paper's rows beside ours; SBoVP /
                             hybrid: the published MAP of paper 000 Table 5 / paper 001
                             Tables 3-4 below), P@20 beside Table 7, per-category AP
    DIR/report.json          every number and setting (machine-readable)
    DIR/map_vs_blocks.png    SBS: MAP (and P@R, MAP with ties averaged) per number of
                             blocks, with the paper's curves
    DIR/map_per_setting.png  SBoVP / hybrid: the same per evaluated setting
    DIR/pr_curves.png        11-point interpolated precision-recall curve per setting
    DIR/per_category_ap.png  AP of each category, one bar per setting
    DIR/gallery.html         chosen queries with their top-k (see semcbir_fast.gallery)
    DIR/gallery.png          the same as one image
    DIR/thumbs/              thumbnails used by the gallery

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["gallery_rows_from_eval", "write_report"]

# Names in a report come from the data (category folders, file paths, the command line):
# report.md shows them as text, never as Markdown / HTML (`<img onerror=...>`, links, table
# breaks), and the plots show them literally (matplotlib would parse `$...$` as mathtext and
# fail on a bad formula). report.json keeps them exact.
_MD_SPECIAL = frozenset("\\`*_[]|~$!#")


class _Markdown(str):
    """Text the report formats itself (written into report.md as is)."""


def _md(text: Any) -> str:
    """``text`` as literal Markdown text: ``&``, ``<``, ``>`` as HTML entities, Markdown's
    punctuation backslash-escaped, line breaks as spaces, other control characters as
    escapes (``\\x1b``)."""
    if isinstance(text, _Markdown):
        return str(text)
    out = []
    for ch in str(text):
        if ch in "&<>":
            out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}[ch])
        elif ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch in "\r\n\t":
            out.append(" ")
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _md_code(text: str) -> str:
    """``text`` as one inline code span (literal whatever it holds: the fence is longer than
    any run of backticks inside; line breaks become spaces)."""
    body = " ".join(str(text).splitlines())
    body = "".join(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 32 else ch
                   for ch in body)
    run = longest = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    return f"{fence} {body} {fence}" if longest else f"`{body}`"


def _plot_text(text: Any) -> str:
    """``text`` for a matplotlib label: shown literally (``$`` escaped: no mathtext)."""
    return str(text).replace("$", "\\$")


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)


def _title(result: Any) -> str:
    return str(result.signature_class.title or result.signature)


def plot_map_vs_blocks(result: Any, path: Path) -> None:
    """Line plot: MAP / P@R per setting (SBS: per number of blocks), ours and the paper's."""
    res = result.results
    x = np.arange(len(res))
    fig = _figure(8.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, [r.map for r in res], "o-", lw=2, color="#1f6feb", label="MAP (ours)")
    ax.plot(
        x,
        [r.map_ties_avg for r in res],
        "o--",
        lw=1,
        color="#1f6feb",
        alpha=0.6,
        label="MAP, ties averaged (ours)",
    )
    ax.plot(x, [r.p_at_r for r in res], "s-", lw=1.5, color="#2da44e", label="P@R (ours)")
    styles = iter([("#cf222e", ":"), ("#8250df", ":")])
    for label, vals in result.published_rows():
        col, ls = next(styles, ("#777", ":"))
        ys = [np.nan if v is None else v for v in vals]
        ax.plot(x, ys, "^" + ls, color=col, label=_plot_text(f"{label} (HRNet-W48)"))
    ax.set_xticks(x, [_plot_text(r.column or r.name) for r in res], rotation=15, ha="right",
                  fontsize=8)
    ax.set_xlabel(result.signature_class.axis.lower())
    ax.set_ylabel("score")
    lo = min([r.p_at_r for r in res] + [r.map for r in res] + [0.7])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.grid(alpha=0.3)
    s = result.settings
    ax.set_title(
        _plot_text(f"{_title(result)} on {s.get('dataset_label', s.get('dataset'))}: "
                   f"{s.get('segmentation', '')}"),
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _save(fig, path)


def plot_pr_curves(result: Any, path: Path) -> None:
    """Interpolated precision-recall curve of each setting."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for r in result.results:
        ax.plot(
            r.pr_recall,
            r.pr_precision,
            "o-",
            ms=3,
            label=_plot_text(f"{r.name} (MAP {r.map:.3f})"),
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("11-point precision-recall (mean over queries)", fontsize=10)
    _save(fig, path)


def plot_per_category_ap(result: Any, path: Path) -> None:
    """Grouped bars: AP of each category for each setting."""
    res = result.results
    cats = list(res[0].per_category_ap) if res else []
    fig = _figure(min(16.0, max(6.5, 0.55 * len(cats) + 3.0)), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(res))
    x = np.arange(len(cats))
    for i, r in enumerate(res):
        ax.bar(
            x + (i - (len(res) - 1) / 2) * width,
            [r.per_category_ap[c] for c in cats],
            width,
            label=_plot_text(r.name),
        )
    ax.set_xticks(x, [_plot_text(c) for c in cats], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean AP of the category's queries")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("per-category AP", fontsize=10)
    _save(fig, path)


def default_gallery_queries(result: Any, per_category: int = 1) -> list[int]:
    """Positions (in ``result.query_idx``) of the first ``per_category`` queries of each category."""
    qcat = result.dataset.categories[result.query_idx]
    out: list[int] = []
    for c in np.unique(qcat):
        out += np.flatnonzero(qcat == c)[:per_category].tolist()
    return sorted(out)


def gallery_rows_from_eval(
    result: Any,
    queries: Sequence[int],
    *,
    k: int = 10,
    level: int | None = None,
    overlay: bool = True,
) -> list[Any]:
    """Gallery rows for query positions ``queries`` at setting ``level`` (default: best MAP).

    ``level`` is the position of the setting in ``result.results`` (for SBS, the settings
    are the evaluated levels in order).
    """
    from .gallery import GalleryHit, GalleryRow

    ds = result.dataset
    lr = _setting(result, level)
    integer = result.signature_class.integer_distances
    maps = result.label_maps if overlay else None
    rows = []
    for qpos in queries:
        qi = int(result.query_idx[qpos])
        qc = int(ds.categories[qi])
        hits = []
        for j in range(min(k, lr.top_ids.shape[1])):
            di = int(lr.top_ids[qpos, j])
            hits.append(
                GalleryHit(
                    path=str(ds.images[di]),
                    distance=(int(lr.top_distances[qpos, j]) if integer
                              else float(lr.top_distances[qpos, j])),
                    id=di,
                    category=ds.category_name(int(ds.categories[di])),
                    relevant=bool(ds.categories[di] == qc),
                    label_map=None if maps is None else maps[di],
                )
            )
        rows.append(
            GalleryRow(
                query=str(ds.images[qi]),
                hits=hits,
                category=ds.category_name(qc),
                label_map=None if maps is None else maps[qi],
                title=f"{ds.images[qi].name} ({ds.category_name(qc)}), AP {lr.ap[qpos]:.3f}",
            )
        )
    return rows


def _setting(result: Any, level: int | None) -> Any:
    if level is None:
        return result.best()
    if not 0 <= level < len(result.results):
        raise ValueError(f"setting {level} does not exist; choose 0..{len(result.results) - 1}")
    return result.results[level]


def _info_cell(value: Any) -> Any:
    """A :meth:`Signature.result_info` value for the table: a number rounded to 0.1, a
    sequence joined with " + " (the fused signature's components), anything else as is."""
    if isinstance(value, (list, tuple)):
        return " + ".join(str(v) for v in value)
    return round(value, 1) if isinstance(value, (int, float, np.number)) else value


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are text (:func:`_md`) unless they are :class:`_Markdown`."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        return _md(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    result: Any,
    out_dir: str | os.PathLike[str],
    *,
    gallery_queries: Sequence[int] | int | None = 1,
    gallery_k: int = 10,
    gallery_level: int | None = None,
    overlay: bool = True,
    embed: bool = False,
    command: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the report folder of an evaluation (see the module docstring).

    Parameters
    ----------
    result : EvalResult
        From :func:`semcbir_fast.eval.evaluate_sbs` or
        :func:`semcbir_fast.eval.evaluate_signature`.
    out_dir : path
        Created if needed; existing report files in it are replaced.
    gallery_queries : int or sequence of int or None, default 1
        An int ``q``: the first ``q`` queries of each category; a sequence: those query
        positions; None or 0: no gallery.
    gallery_k : int, default 10
        Results shown per query.
    gallery_level : int, optional
        Setting shown in the gallery: an SBS level, or the position of an SBoVP / hybrid
        setting in ``result.results`` (default: the one with the best MAP).
    overlay : bool, default True
        Offer label-map overlays in the gallery (when the result kept its label maps).
    embed : bool, default False
        Embed the gallery thumbnails in the HTML.
    command : str, optional
        The command line that produced the result (written into the report).
    extra : dict, optional
        More entries for ``report.json``.

    Returns
    -------
    dict
        ``{"markdown", "json", "map_vs_blocks" (SBS) or "map_per_setting", "pr_curves",
        "per_category_ap", "gallery"?}``.
    """
    from .eval.paper import TABLE7_TOP20

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    s = result.settings
    res = result.results
    kind = result.signature_class
    title = _title(result)
    map_key = kind.report_plot
    files[map_key] = out / f"{map_key}.png"
    plot_map_vs_blocks(result, files[map_key])
    files["pr_curves"] = out / "pr_curves.png"
    plot_pr_curves(result, files["pr_curves"])
    files["per_category_ap"] = out / "per_category_ap.png"
    plot_per_category_ap(result, files["per_category_ap"])

    shown = None
    if gallery_queries:
        qs = (
            default_gallery_queries(result, int(gallery_queries))
            if isinstance(gallery_queries, int)
            else [int(q) for q in gallery_queries]
        )
        rows = gallery_rows_from_eval(
            result,
            qs,
            k=gallery_k,
            level=gallery_level,
            overlay=overlay and result.label_maps is not None,
        )
        shown = _setting(result, gallery_level)
        where = shown.name + (f", filter {s['filter']}" if "filter" in s else "")
        ds = result.dataset
        class_names = s.get("class_names") or ds.label_classes
        colors = ds.label_colors if s.get("segmentation") == "oracle" else None
        files["gallery"] = __import__(
            "semcbir_fast.gallery", fromlist=["write_gallery"]
        ).write_gallery(
            rows,
            out,
            title=f"{title} retrieval on {s.get('dataset_label', s.get('dataset'))}",
            subtitle=(
                f"{s.get('segmentation')}; {where}; top {gallery_k}; mode {s.get('mode')}"
            ),
            embed=embed,
            class_names=class_names,
            class_colors=colors,
        )

    ref = result.published()
    data = result.to_dict()
    data["command"] = command
    data["written"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    data["files"] = {k: v.name for k, v in files.items()}
    if extra:
        data.update(extra)
    data["settings"] = {k: v for k, v in data["settings"].items() if k != "class_names"}
    files["json"] = out / "report.json"
    files["json"].write_text(json.dumps(data, indent=1, default=str))

    md: list[str] = []
    dname = _md(s.get("dataset_label", s.get("dataset")))
    md.append(f"# {_md(title)} retrieval on {dname} ({_md(s.get('segmentation'))})\n")
    if command:
        md.append(f"Command: {_md_code(command)}\n")
    void = "" if s.get("ignore_index") is None else f", class {_md(s['ignore_index'])} void"
    extra_what = "".join([f", {_md(s['method'])} keypoints" if s.get("method") else "",
                          ", pyramid" if s.get("pyramid") else "",
                          f", semantic-histogram filter {_md(s['filter'])}" if "filter" in s
                          else ""])
    what = (f"{_md(kind.distance)} over {_md(title)} signatures ({_md(s['num_classes'])} "
            f"classes{void}{extra_what}). Results are ranked by (penalised, distance, smaller "
            "database id)")
    from .eval.evaluate import left_out_text

    left = _md(left_out_text(s.get("queries_without_relevant", 0)))
    md.append(
        f"{_md(s['images'])} images in {_md(s['categories'])} categories; mode "
        f"**{_md(s['mode'])}** ({_md(s['queries'])} queries, database of {_md(s['database'])}"
        f"{', the query excluded from its own ranking' if s['exclude_query'] else ', each query stays in the database'}"
        f"{'; ' + left if left else ''}); "
        f"{what}; *MAP, ties averaged* scores every tie group by its expected value over all "
        "orders instead.\n"
    )
    md.append(f"## MAP per {_md(kind.axis.lower())}\n")
    header = ["", *[r.column or r.name for r in res]]
    rows_md: list[list[Any]] = [
        [_Markdown("**MAP (ours)**"), *[r.map for r in res]],
        ["MAP, ties averaged", *[r.map_ties_avg for r in res]],
        ["P@R (R = category size)", *[r.p_at_r for r in res]],
    ]
    for k in res[0].p_at_k if res else {}:
        rows_md.append([f"P@{k}", *[r.p_at_k[k] for r in res]])
    for label, vals in result.published_rows():
        rows_md.append([f"{label}, HRNet-W48", *vals])
    for key in res[0].info if res else {}:
        rows_md.append([key.replace("_", " "), *[_info_cell(r.info[key]) for r in res]])
    rows_md.append(["encode ms / image", *[round(r.encode_ms_per_image, 4) for r in res]])
    rows_md.append(["search ms / query", *[round(r.search_ms_per_query, 4) for r in res]])
    md.append(_md_table(header, rows_md) + "\n")
    scalars = {k: v for k, v in (ref.get("rows") or {}).items() if isinstance(v, (int, float))}
    if scalars:
        md.append(f"Published MAP ({_md(ref['source'])}; segmentation and descriptor as "
                  "named):\n")
        md.append(_md_table(["setting", "MAP"], [[k, v] for k, v in scalars.items()]) + "\n")
    md.append(f"![MAP per setting]({files[map_key].name})\n")
    if s.get("dataset") == "corel1k" and res and all(20 in r.p_at_k for r in res):
        md.append("## Top-20 precision (paper 000 Table 7, paper 001 Table 5)\n")
        t7: list[list[Any]] = [[name, v] for name, v in TABLE7_TOP20.items()]
        t7 += [[_Markdown(f"**{_md(title)}, ours ({_md(r.name)})**"), r.p_at_k[20]]
               for r in res]
        md.append(_md_table(["method", "top 20"], t7) + "\n")
        md.append("The paper's 0.94 is its SBoVP signature (visual phrases).\n")
    md.append("## Per-category AP\n")
    cats = list(res[0].per_category_ap) if res else []
    md.append(
        _md_table(
            ["category", *[r.name for r in res]],
            [[c, *[r.per_category_ap[c] for r in res]] for c in cats],
        )
        + "\n"
    )
    md.append("![per-category AP](per_category_ap.png)\n")
    md.append("## Precision-recall\n\n![precision-recall curves](pr_curves.png)\n")
    if "gallery" in files and shown is not None:
        md.append(
            f"## Gallery\n\n[gallery.html](gallery.html): one query per category and its top "
            f"{gallery_k} at {_md(shown.name)} (green: same category, red: "
            "other).\n\n![gallery](gallery.png)\n"
        )
    md.append("## Settings and versions\n")
    md.append(
        _md_table(
            ["setting", "value"],
            [
                [k, json.dumps(v) if not isinstance(v, str) else v]
                for k, v in s.items()
                if k != "class_names"
            ],
        )
        + "\n"
    )
    md.append(_md_table(["package", "version"], list(result.versions.items())) + "\n")
    files["markdown"] = out / "report.md"
    files["markdown"].write_text("\n".join(md))
    return files
