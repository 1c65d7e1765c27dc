"""HTML (and PNG) galleries of retrieval results: each query beside its top-k.

:func:`write_gallery` writes ``gallery.html`` into a folder, with JPEG thumbnails in
``thumbs/`` beside it (relative links, so the page works when the folder is opened or
moved as a whole) or embedded as base64 (``embed=True``: a single self-contained file).
Each result shows its rank, distance (Hamming, or L2 for SBoVP / hybrid signatures) and
category; when categories are known
the border is green for a result of the query's category and red otherwise (the query's
own border is blue). With label maps, a checkbox at the top overlays them in colour
(a class legend is shown). ``gallery.png`` renders the same rows as one image, for
reports and for looking at the result without a browser.

OpenCV is imported lazily (thumbnails); nothing here needs torch.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_path

__all__ = ["GalleryHit", "GalleryRow", "label_palette", "write_gallery"]

_BLUE = (31, 111, 235)
_GREEN = (45, 164, 78)
_RED = (207, 34, 46)
_GREY = (170, 170, 170)


@dataclass
class GalleryHit:
    """One result shown in a gallery row."""

    path: str
    distance: float | None = None  # int for Hamming distances
    id: int | None = None
    category: str | None = None
    relevant: bool | None = None
    label_map: np.ndarray | None = field(default=None, repr=False)


@dataclass
class GalleryRow:
    """A query and its ranked results."""

    query: str
    hits: list[GalleryHit]
    category: str | None = None
    label_map: np.ndarray | None = field(default=None, repr=False)
    title: str | None = None


def _fmt_distance(d: float) -> str:
    """Hamming distances as integers, L2 distances with 4 significant digits."""
    if isinstance(d, (int, np.integer)):
        return str(int(d))
    return f"{float(d):.4g}"


def label_palette(
    num_classes: int, colors: Sequence[tuple[int, int, int]] | None = None
) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours: ``colors`` where given, else the PASCAL VOC
    bit-interleaving palette (distinct, deterministic colours for any class count)."""
    out = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for c in range(out.shape[0]):
        if colors is not None and c < len(colors):
            out[c] = colors[c]
            continue
        r = g = b = 0
        v = c
        for shift in range(7, -1, -1):
            r |= ((v >> 0) & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
            if v == 0:
                break
        out[c] = (r, g, b)
    return out


def _read_rgb(path: str) -> np.ndarray | None:
    from semcbir_fast.imageio import ImageReadError, read_image

    try:
        return read_image(path)
    except (ImageReadError, OSError, ValueError):
        return None


def _thumb(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def _overlay(
    img: np.ndarray, labels: np.ndarray, pal: np.ndarray, alpha: float = 0.55
) -> np.ndarray:
    import cv2

    lab = np.asarray(labels)
    if lab.shape[:2] != img.shape[:2]:
        lab = cv2.resize(
            lab.astype(np.int32).astype(np.float32),
            (img.shape[1], img.shape[0]),
            interpolation=cv2.INTER_NEAREST,
        ).astype(np.int64)
    lab = np.clip(lab.astype(np.int64), 0, pal.shape[0] - 1)
    col = pal[lab]
    return (img.astype(np.float32) * (1 - alpha) + col.astype(np.float32) * alpha).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class _Thumbs:
    """Makes thumbnails once per (image, overlay) and returns their URLs."""

    def __init__(self, out_dir: Path, size: int, embed: bool, pal: np.ndarray | None) -> None:
        self.dir = out_dir / "thumbs"
        self.size, self.embed, self.pal = size, embed, pal
        self.cache: dict[tuple[str, bool], tuple[str, np.ndarray] | None] = {}
        self.class_share: dict[int, float] = {}  # class -> largest share of one shown map

    def get(self, path: str, labels: np.ndarray | None = None) -> tuple[str, np.ndarray] | None:
        key = (path, labels is not None)
        if key in self.cache:
            return self.cache[key]
        img = _read_rgb(path)
        if img is None:
            self.cache[key] = None
            return None
        if labels is not None and self.pal is not None:
            lab = np.asarray(labels).ravel()
            counts = np.bincount(lab[lab >= 0].astype(np.int64))
            for c in np.flatnonzero(counts).tolist():
                share = counts[c] / max(lab.size, 1)
                self.class_share[c] = max(self.class_share.get(c, 0.0), share)
            img = _overlay(img, labels, self.pal)
        th = _thumb(img, self.size)
        data = _jpeg(th)
        if self.embed:
            url = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha1(
                f"{os.path.abspath(path)}|{key[1]}|{self.size}".encode()
            ).hexdigest()[:16]
            fn = f"{name}{'_ov' if key[1] else ''}.jpg"
            (self.dir / fn).write_bytes(data)
            url = f"thumbs/{fn}"
        self.cache[key] = (url, th)
        return self.cache[key]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;background:#f6f7f9;color:#222}
h1{font-size:20px;margin:0 0 4px} p.sub{margin:0 0 10px;color:#555;font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;background:#fff;border:1px solid #e1e4e8;
  border-radius:6px;padding:8px;margin:10px 0}
.row h2{flex-basis:100%;font-size:13px;margin:0 0 2px;font-weight:600;color:#444}
figure{margin:0;position:relative;width:SIZEpx}
figure .im{position:relative;line-height:0}
figure img{display:block;width:100%;height:auto;border:5px solid #aaa;border-radius:3px;box-sizing:border-box}
figure img.ov{position:absolute;top:0;left:0;opacity:0;transition:opacity .15s}
figure.q img{border-color:#1f6feb} figure.ok img{border-color:#2da44e} figure.bad img{border-color:#cf222e}
figure.missing .im{width:SIZEpx;height:SIZEpx;background:#eee;border:5px dashed #aaa;box-sizing:border-box}
figcaption{font-size:11px;line-height:1.3;margin-top:3px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
figcaption b{font-variant-numeric:tabular-nums}
figcaption .fn{display:block;color:#57606a;overflow:hidden;text-overflow:ellipsis}
#ovt:checked ~ .rows img.ov{opacity:1}
.legend{display:flex;flex-wrap:wrap;gap:6px;font-size:11px;margin:6px 0}
.legend span{display:inline-flex;align-items:center;gap:3px}
.legend i{display:inline-block;width:12px;height:12px;border:1px solid #0003}
.key{font-size:12px;color:#555} .key i{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px}
"""


def write_gallery(
    rows: Sequence[GalleryRow],
    out_dir: str | os.PathLike[str],
    *,
    title: str = "semcbir retrieval gallery",
    subtitle: str = "",
    thumb_size: int = 160,
    embed: bool = False,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[tuple[int, int, int]] | None = None,
    html_name: str = "gallery.html",
    png_name: str | None = "gallery.png",
    png_rows: int = 12,
) -> Path:
    """Write an HTML gallery (and a PNG rendering) of retrieval results.

    Parameters
    ----------
    rows : sequence of GalleryRow
        One row per query: the query image and its hits, in rank order.
    out_dir : path
        Folder to write into (created); thumbnails go to ``out_dir/thumbs/`` unless
        ``embed``.
    title, subtitle : str
        Page heading and a line under it (e.g. the settings).
    thumb_size : int, default 160
        Longest side of a thumbnail in pixels.
    embed : bool, default False
        Embed thumbnails as base64 ``data:`` URLs (one self-contained HTML file).
    class_names, class_colors : optional
        Names and RGB colours of the label-map classes (for overlays and the legend); the
        PASCAL VOC palette fills missing colours.
    html_name : str, default "gallery.html"
    png_name : str or None, default "gallery.png"
        Also render the first ``png_rows`` rows as a PNG (None: skip).

    Returns
    -------
    pathlib.Path
        Path of the HTML file.
    """
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, int) or thumb_size < 16:
        raise ValueError(f"thumb_size must be an int >= 16 pixels, got {thumb_size!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_maps = any(
        r.label_map is not None or any(h.label_map is not None for h in r.hits) for r in rows
    )
    ncls = len(class_names) if class_names else 0
    if has_maps and not ncls:
        ncls = 1 + max(
            int(np.max(m))
            for r in rows
            for m in [r.label_map, *(h.label_map for h in r.hits)]
            if m is not None
        )
    pal = label_palette(ncls, class_colors) if has_maps else None
    plain = _Thumbs(out, thumb_size, embed, None)
    over = _Thumbs(out, thumb_size, embed, pal)

    def fig(path: str, cls: str, caption: str, tip: str, labels: np.ndarray | None) -> str:
        caption += f'<span class="fn">{html.escape(os.path.basename(path))}</span>'
        t = plain.get(path)
        if t is None:
            return (
                f'<figure class="{cls} missing" title="{html.escape(tip)}"><div class="im"></div>'
                f"<figcaption>{caption} (unreadable)</figcaption></figure>"
            )
        ov = ""
        if labels is not None and pal is not None:
            o = over.get(path, labels)
            if o is not None:
                ov = f'<img class="ov" src="{o[0]}" alt="label map" loading="lazy">'
        return (
            f'<figure class="{cls}" title="{html.escape(tip)}"><div class="im">'
            f'<img src="{t[0]}" alt="{html.escape(os.path.basename(path))}" loading="lazy">{ov}</div>'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    parts = []
    for r in rows:
        cat = f" &middot; {html.escape(r.category)}" if r.category is not None else ""
        head = html.escape(r.title or os.path.basename(r.query))
        cells = [f"<h2>{head}</h2>", fig(r.query, "q", f"<b>query</b>{cat}", r.query, r.label_map)]
        for rank, h in enumerate(r.hits, 1):
            cls = "" if h.relevant is None else ("ok" if h.relevant else "bad")
            bits = [f"<b>#{rank}</b>"]
            if h.distance is not None:
                bits.append(f"d=<b>{_fmt_distance(h.distance)}</b>")
            if h.category is not None:
                bits.append(html.escape(h.category))
            tip = h.path + (f"  (id {h.id})" if h.id is not None else "")
            cells.append(fig(h.path, cls, " &middot; ".join(bits), tip, h.label_map))
        parts.append(f'<div class="row">{"".join(cells)}</div>')

    legend = ""
    if pal is not None:
        items = []
        # classes that cover at least 1% of some shown image, most prominent first
        shown = sorted((c for c, v in over.class_share.items() if v >= 0.01),
                       key=lambda c: -over.class_share[c])
        for c in shown:
            if 0 <= c < pal.shape[0]:
                name = class_names[c] if class_names and c < len(class_names) else str(c)
                r, g, b = (int(v) for v in pal[c])
                rgb = f"#{r:02x}{g:02x}{b:02x}"
                items.append(f'<span><i style="background:{rgb}"></i>{html.escape(str(name))}</span>')
        legend = (
            f'<input type="checkbox" id="ovt"> <label for="ovt">overlay the label maps</label>'
            f'<div class="legend"><span>classes covering 1% or more of a shown image:</span>'
            f'{"".join(items)}</div>'
        )
    key = (
        '<p class="key">border: <i style="background:#1f6feb"></i>query'
        '<i style="background:#2da44e"></i>same category<i style="background:#cf222e"></i>'
        'other category<i style="background:#aaa"></i>unknown</p>'
    )
    doc = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS.replace('SIZE', str(thumb_size))}</style>"
        f'</head><body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
        f'{key}{legend}<div class="rows">{"".join(parts)}</div></body></html>\n'
    )
    path = out / html_name
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    if png_name:
        _write_png(rows[:png_rows], plain, out / png_name, thumb_size)
    return path


def _write_png(rows: Sequence[GalleryRow], thumbs: _Thumbs, path: Path, size: int) -> None:
    """Contact sheet: one line per query, coloured borders, rank and distance under each."""
    import cv2

    if not rows:
        return
    border, cap, gap = 5, 18, 6
    cell_w, cell_h = size + 2 * border, size + 2 * border + cap
    ncols = 1 + max(len(r.hits) for r in rows)
    sheet = np.full(
        (gap + len(rows) * (cell_h + gap), gap + ncols * (cell_w + gap), 3), 255, np.uint8
    )
    for i, r in enumerate(rows):
        items: list[tuple[str, tuple[int, int, int], str]] = [(r.query, _BLUE, "query")]
        for rank, h in enumerate(r.hits, 1):
            colr = _GREY if h.relevant is None else (_GREEN if h.relevant else _RED)
            text = f"#{rank}" + (
                f" d={_fmt_distance(h.distance)}" if h.distance is not None else "")
            items.append((h.path, colr, text))
        y0 = gap + i * (cell_h + gap)
        for j, (p, colr, text) in enumerate(items):
            x0 = gap + j * (cell_w + gap)
            sheet[y0 : y0 + size + 2 * border, x0 : x0 + cell_w] = colr
            inner = sheet[y0 + border : y0 + border + size, x0 + border : x0 + border + size]
            inner[:] = 235
            t = thumbs.get(p)
            if t is not None:
                th = t[1]
                h_, w_ = th.shape[:2]
                oy, ox = (size - h_) // 2, (size - w_) // 2
                inner[oy : oy + h_, ox : ox + w_] = th
            cv2.putText(
                sheet,
                text,
                (x0 + 2, y0 + size + 2 * border + cap - 5),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.42,
                (30, 30, 30),
                1,
                cv2.LINE_AA,
            )
    ok, buf = cv2.imencode(".png", sheet[:, :, ::-1])
    if ok:
        path.write_bytes(buf.tobytes())
