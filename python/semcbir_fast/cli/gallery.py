"""``semcbir gallery INDEX IMAGE... -o DIR``: an HTML page of queries and their results."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from ._common import (
    CLIError,
    add_model_options,
    add_root_option,
    index_model,
    load_model,
    open_index,
    plural,
    positive_int,
    printable,
    query,
)

HELP = "HTML page of query images and their top-k results"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gallery", help=HELP,
        description="Search INDEX for each IMAGE and write DIR/gallery.html (thumbnails in "
        "DIR/thumbs) and DIR/gallery.png.")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("-k", type=positive_int, default=10, help="results per query (10)")
    p.add_argument("--categories", choices=["none", "corel1k", "msrc", "parent"],
                   default="none",
                   help="how to tell an image's category from its path, for green/red "
                   "borders: corel1k (<id>.jpg -> id//100), msrc (<group>_...), parent "
                   "(folder name)")
    p.add_argument("--overlay", action="store_true",
                   help="also segment the shown images and offer label-map overlays")
    p.add_argument("--embed", action="store_true", help="embed thumbnails in the HTML file")
    p.add_argument("--resegment", action="store_true",
                   help="segment query images even when they are in the index")
    add_root_option(p)
    add_model_options(p, model_default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=run)


_COREL_NAMES: dict[Path, dict[int, str]] = {}


def _corel_names(images_dir: Path) -> dict[int, str]:
    """Category names of a Corel-1K layout (``labels.csv`` beside ``images/``), or {}."""
    if images_dir not in _COREL_NAMES:
        from ..eval.datasets import read_category_names

        names: dict[int, str] = {}
        for base in (images_dir.parent, images_dir):
            try:
                names = read_category_names(base / "labels.csv")
            except OSError:
                names = {}
            if names:
                break
        _COREL_NAMES[images_dir] = names
    return _COREL_NAMES[images_dir]


def category_of(path: str, rule: str) -> str | None:
    """The category of an image by ``rule``: its name where the data set names it (Corel-1K's
    ``labels.csv``), else its id (``"group 3"`` for MSRC) or folder name."""
    p = Path(path)
    try:
        if rule == "corel1k":
            cid = int(p.stem) // 100
            return _corel_names(p.parent).get(cid, str(cid))
        if rule == "msrc":
            return f"group {int(p.stem.split('_')[0])}"
        if rule == "parent":
            return p.parent.name
    except ValueError:
        return None
    return None


def run(args: argparse.Namespace) -> int:
    from ..gallery import GalleryHit, GalleryRow, write_gallery
    from ..pipeline import image_key

    index = open_index(args.index)
    if len(index) == 0:
        raise CLIError(f"{args.index} is empty")
    if not index.has_keys:
        raise CLIError(f"{args.index} has no image paths (keys) to show")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"-o must be a folder, got the file {out}")
    res = query(args, index, args.images, args.k, labels=args.overlay)
    hit_maps: dict[str, Any] = dict(res.label_maps)
    if args.overlay:
        need = sorted({k for row in res.keys for k in row if k} - set(hit_maps))
        if need:
            seg = load_model(args, index_model(args, index))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = seg.segment(need, batch_size=args.batch_size, progress=False,
                                on_error="skip")
            hit_maps.update({p: m for p, m in zip(need, r.labels) if m is not None})
    rule = args.categories
    integer = index.signature.integer_distances
    rows = []
    for j, img in enumerate(args.images):
        qkey = image_key(img)
        qcat = category_of(qkey, rule) if rule != "none" else None
        hits = []
        for i, d, key in zip(res.ids[j], res.distances[j], res.keys[j]):
            if i < 0 or key is None:
                continue
            cat = category_of(key, rule) if rule != "none" else None
            hits.append(GalleryHit(
                path=key, distance=int(d) if integer else float(d), id=int(i), category=cat,
                relevant=None if qcat is None or cat is None else cat == qcat,
                label_map=hit_maps.get(key)))
        rows.append(GalleryRow(query=qkey, hits=hits, category=qcat,
                               label_map=hit_maps.get(qkey),
                               title=f"{Path(img).name} ({res.source[j]})"))
    md = index.metadata
    names = md.get("class_names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None  # metadata is the file's: use only what has the expected shape
    html_path = write_gallery(
        rows, out, title=f"semcbir: {plural(len(rows), 'query')} on {Path(args.index).name}",
        subtitle=(f"{plural(len(index), 'image')}, model {md.get('model_name', md.get('model', '?'))}, "
                  f"{index.describe()}, top {args.k}"),
        embed=args.embed, class_names=names)
    print(printable(html_path))
    return 0
