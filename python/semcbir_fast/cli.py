"""``semcbir``: index a folder of images, search it, evaluate, and make galleries.

Commands (``semcbir COMMAND --help`` for every option)::

    semcbir index FOLDER... -o INDEX [--model ade20k-mnv2|PATH] [--levels 2] [--append]
                  [--signature sbs|sbovp|hybrid [--method kaze] [--words 64] [--vocab FILE]]
    semcbir search INDEX IMAGE... [-k 10] [--json]
    semcbir info INDEX [--json]
    semcbir eval --dataset corel1k|msrc|folders [--root DIR] [--oracle] [--levels 0 1 2 3]
                 [--report DIR] [--signature sbs|sbovp|hybrid [--method kaze] [--words 64]
                 [--n 2] [--no-semantic-words] [--no-filter] [--epsilon 0.9] [--vocab-root DIR]]
    semcbir gallery INDEX IMAGE... -o DIR [-k 10] [--categories corel1k|msrc|parent]

Also ``python -m semcbir_fast ...``. A user mistake (missing file, bad option value,
corrupt index) prints one line ``semcbir <command>: error: ...`` on stderr and exits with
status 1 (2 for command-line syntax errors, 130 on Ctrl-C); tracebacks are for bugs only
(``SEMCBIR_DEBUG=1`` shows them for every error).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "main"]

DEFAULT_MODEL = "ade20k-mnv2"
DEFAULT_LEVELS = 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _log(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        _err(msg)


def _key_of(path: str | os.PathLike[str]) -> str:
    """The key an image is stored under: its absolute path (not resolving symlinks)."""
    return os.path.abspath(os.fspath(path))


def _fmt_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


# ----------------------------------------------------------------------------- parser
def _int_in(lo: int, hi: int | None, what: str) -> Any:
    """argparse type: an integer in [lo, hi], described as ``what`` in the error."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


_positive_int = _int_in(1, None, "a positive integer")
_level = _int_in(0, 12, "a level 0..12 (4**level blocks)")
_phrase_n = _int_in(2, 4, "2, 3 or 4 words per phrase")


def _add_model_args(p: argparse.ArgumentParser, *, model_default: str | None) -> None:
    g = p.add_argument_group("segmentation model")
    g.add_argument(
        "--model",
        default=model_default,
        metavar="NAME|PATH",
        help=f"registered model name or TorchScript file with its .json sidecar "
        f"(default: {model_default or 'the one recorded in the index'})",
    )
    g.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda, cuda:1 (default: cuda if available, else cpu)",
    )
    g.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="model compute type (default float32; float16 needs CUDA)",
    )
    g.add_argument(
        "--batch-size", type=_positive_int, default=16, help="images per model call (16)"
    )


def _add_local_args(p: argparse.ArgumentParser, *, several: bool) -> None:
    """Options of the SBoVP / hybrid signatures (``several``: eval takes lists)."""
    g = p.add_argument_group(
        "sbovp / hybrid signatures",
        "Local features from OpenCV. SBoVP defaults differ from SPEC.md's plain L x L form, "
        "which ranks poorly: semantic words (every visual word tagged with its region's "
        "class), Hellinger normalisation and the semantic histogram appended to the "
        "signature; --no-semantic-words --normalize l2 --histogram-weight 0 --no-filter "
        "gives the SPEC form.",
    )
    g.add_argument(
        "--method",
        default="kaze",
        choices=["kaze", "sift", "akaze", "orb", "surf"],
        help="keypoint detector / descriptor (kaze, paper 000's best)",
    )
    g.add_argument(
        "--words",
        type=_positive_int,
        nargs="+" if several else None,
        default=[16] if several else 16,
        metavar="L",
        help="sbovp: vocabulary size (16)"
        + ("; several values give one column each" if several else ""),
    )
    g.add_argument(
        "--n",
        type=_phrase_n,
        nargs="+" if several else None,
        default=[2] if several else 2,
        metavar="N",
        dest="phrase_n",
        help="sbovp: words per phrase, 2..4 (2)"
        + ("; several values give one column each" if several else ""),
    )
    g.add_argument(
        "--semantic-words",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sbovp: tag visual words with their region's class (default on; off = SPEC.md's "
        "plain L x L matrix)",
    )
    g.add_argument(
        "--normalize",
        choices=["hellinger", "l2", "l1", "none"],
        default="hellinger",
        help="sbovp: per-image normalisation of the phrase matrix (hellinger: square roots, "
        "then l2)",
    )
    g.add_argument(
        "--histogram-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="sbovp: append the semantic histogram (sqrt of the class proportions) with this "
        "weight to each signature (1; 0 = SPEC.md's phrases only)",
    )
    g.add_argument(
        "--filter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="semantic-histogram filter of paper 001 in front of the ranking (default: on "
        "for hybrid and for sbovp with --histogram-weight 0, off for sbovp with the "
        "histogram, where it only lowers MAP)",
    )
    g.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="filter threshold on the L1 histogram distance (0.9, paper 001); giving it "
        "turns the filter on",
    )
    g.add_argument(
        "--vocab-root",
        default=None,
        metavar="DIR",
        help="sbovp: fit the vocabulary on the images under DIR (recursively) instead of "
        "the indexed / evaluated images themselves (the default; paper 000 fits on another "
        "data set)",
    )
    if not several:
        g.add_argument(
            "--vocab",
            default=None,
            metavar="FILE",
            help="sbovp: a saved vocabulary (Vocabulary.save, .npz) instead of fitting one",
        )
    g.add_argument(
        "--vocab-seed", type=int, default=0, help="sbovp: k-means seed of the vocabulary (0)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``semcbir`` (exposed for documentation tools)."""
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="semcbir",
        description="Content-based image retrieval with Semantic Binary Signatures "
        "(semantic segmentation -> binary codes -> Hamming search).",
    )
    ap.add_argument("--version", action="version", version=f"semcbir_fast {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "index",
        help="segment the images of folders and build (or extend) an index",
        description="Find images under FOLDER(s) recursively, segment them, encode "
        "SBS codes (or SBoVP / hybrid signatures with --signature) and save an index "
        "file. Unreadable images are skipped and listed.",
    )
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="image folders (or image files)")
    p.add_argument("-o", "--output", required=True, metavar="INDEX", help="index file to write")
    p.add_argument(
        "--levels",
        type=_level,
        default=None,
        help=f"SBS grid 2^n x 2^n blocks (default {DEFAULT_LEVELS}, or the index's with --append)",
    )
    p.add_argument("--pyramid", action="store_true", help="concatenate the codes of levels 0..n")
    p.add_argument(
        "--signature",
        default=None,
        choices=["sbs", "sbovp", "hybrid"],
        help="sbs (binary codes, default), sbovp (semantic bag of visual phrases, paper 000) "
        "or hybrid (paper 001); with --append, the index's",
    )
    p.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        metavar="CLASS",
        help="a class id to treat as void (not counted)",
    )
    p.add_argument("--threads", type=int, default=0, help="feature threads (0 = all cores)")
    _add_local_args(p, several=False)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--append",
        action="store_true",
        help="add the images not yet in INDEX (same model and levels)",
    )
    mode.add_argument("--overwrite", action="store_true", help="replace INDEX if it exists")
    _add_model_args(p, model_default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser(
        "search",
        help="rank the indexed images for query images",
        description="Print the k nearest indexed images of each query image by "
        "Hamming distance (SBS) or L2 distance with the histogram filter (SBoVP, hybrid; "
        "the settings are the index's); ties: smaller id first. A query that is "
        "already in the index is looked up, not segmented again.",
    )
    p.add_argument("index", metavar="INDEX")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-k", type=_positive_int, default=10, help="results per query (10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--resegment",
        action="store_true",
        help="segment query images even when they are in the index",
    )
    p.add_argument("--threads", type=int, default=0, help="search threads (0 = all cores)")
    _add_model_args(p, model_default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="describe an index file")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--no-verify", action="store_true", help="skip the checksum (faster on huge files)"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "eval",
        help="measure retrieval quality on a labelled data set",
        description="Segment a data set (or use its ground truth with --oracle), "
        "encode SBS at each level and print MAP per number of blocks "
        "(paper 000 Table 3 layout), P@R and P@k. With --signature sbovp|hybrid: "
        "extract local features, build those signatures from the same label maps "
        "and print the same scores per setting.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        choices=["corel1k", "msrc", "folders"],
        help="layout: corel1k (<id>.jpg, category id//100), msrc (<group>_<k>_s.jpg, "
        "labels/ ground truth), folders (one sub-folder per category)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="data set folder (default: $SEMCBIR_DATA or ../shared/data, + corel1k / msrc_v1)",
    )
    p.add_argument(
        "--signature",
        default="sbs",
        choices=["sbs", "sbovp", "hybrid"],
        help="sbs (binary codes, default), sbovp (semantic bag of visual phrases, paper 000) "
        "or hybrid (per-class mean descriptors + semantic-histogram filter, paper 001)",
    )
    p.add_argument(
        "--levels",
        type=_level,
        nargs="+",
        default=[0, 1, 2, 3],
        help="SBS levels to evaluate (default 0 1 2 3 = 1, 4, 16, 64 blocks)",
    )
    p.add_argument("--pyramid", action="store_true", help="concatenate the codes of levels 0..n")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="use the ground-truth label maps instead of a model (msrc)",
    )
    _add_local_args(p, several=True)
    p.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        metavar="CLASS",
        help="a class id to treat as void (default: none for a model, the data "
        "set's void class with --oracle)",
    )
    p.add_argument(
        "--mode",
        choices=["query-in-db", "disjoint"],
        default="query-in-db",
        help="query-in-db: every image is a query and stays in the database "
        "(paper 000 Table 1); disjoint: split queries from the database",
    )
    p.add_argument(
        "--queries-per-category",
        type=_positive_int,
        default=10,
        help="disjoint mode: queries taken from each category (10)",
    )
    p.add_argument(
        "--exclude-query",
        action="store_true",
        help="query-in-db: drop each query from its own ranking",
    )
    p.add_argument(
        "-k",
        type=_positive_int,
        nargs="+",
        default=[10, 20],
        dest="ks",
        help="cut-offs for P@k (default 10 20; 20 = paper 000 Table 7)",
    )
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="use at most N images, spread evenly over the categories (a quick run)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="segment again instead of reusing cached label maps"
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write report.md, report.json, PNG plots and gallery.html into DIR",
    )
    p.add_argument(
        "--gallery-queries",
        type=int,
        default=1,
        metavar="N",
        help="report gallery: the first N queries of each category (1; 0 = none)",
    )
    p.add_argument(
        "--gallery-k", type=_positive_int, default=10, help="report gallery: results per query"
    )
    p.add_argument("--embed", action="store_true", help="embed gallery thumbnails in the HTML")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--threads", type=int, default=0, help="encode/search threads (0 = all cores)")
    _add_model_args(p, model_default=DEFAULT_MODEL)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "gallery",
        help="HTML page of query images and their top-k results",
        description="Search INDEX for each IMAGE and write DIR/gallery.html "
        "(thumbnails in DIR/thumbs) and DIR/gallery.png.",
    )
    p.add_argument("index", metavar="INDEX")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("-k", type=_positive_int, default=10, help="results per query (10)")
    p.add_argument(
        "--categories",
        choices=["none", "corel1k", "msrc", "parent"],
        default="none",
        help="how to tell an image's category from its path, for green/red borders: "
        "corel1k (<id>.jpg -> id//100), msrc (<group>_...), parent (folder name)",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also segment the shown images and offer label-map overlays",
    )
    p.add_argument("--embed", action="store_true", help="embed thumbnails in the HTML file")
    p.add_argument(
        "--resegment",
        action="store_true",
        help="segment query images even when they are in the index",
    )
    _add_model_args(p, model_default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=cmd_gallery)
    return ap


# ----------------------------------------------------------------------------- helpers
def _discover(inputs: Sequence[str]) -> list[str]:
    from .eval.datasets import IMAGE_EXTENSIONS, find_images

    out: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [str(x) for x in find_images(p)]
        elif p.is_file():
            if not p.name.lower().endswith(IMAGE_EXTENSIONS):
                raise CLIError(
                    f"{item} is not an image file (known endings: {' '.join(IMAGE_EXTENSIONS)})"
                )
            found = [str(p)]
        else:
            raise CLIError(f"no such folder or file: {item}")
        for f in found:
            k = _key_of(f)
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def _load_segmenter(args: argparse.Namespace, model: str) -> Any:
    try:
        from .segment import load_segmenter
    except ImportError as exc:  # torch / OpenCV missing
        raise CLIError(
            f"segmentation needs the 'segment' extra ({exc}); install it with "
            "pip install 'semcbir_fast[segment]'"
        ) from None
    cached = getattr(args, "_segmenter", None)
    if cached is not None and cached[0] == model:
        return cached[1]
    _log(args, f"loading model {model} ...")
    seg = load_segmenter(model, device=args.device, dtype=args.dtype)
    args._segmenter = (model, seg)
    return seg


def _segment_codes(
    args: argparse.Namespace,
    seg: Any,
    paths: list[str],
    *,
    levels: int,
    pyramid: bool,
    ignore_index: int | None,
    num_classes: int | None = None,
    labels: bool = False,
) -> Any:
    from .segment import index_images

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are reported by the CLI
        return index_images(
            paths,
            segmenter=seg,
            levels=levels,
            pyramid=pyramid,
            num_classes=num_classes,
            ignore_index=ignore_index,
            batch_size=args.batch_size,
            return_labels=labels,
            progress=not getattr(args, "quiet", False) and len(paths) > args.batch_size,
            on_error="skip",
        )


def _report_failed(
    failed: Sequence[tuple[str, str]], what: str = "unreadable files skipped"
) -> None:
    if failed:
        _err(f"{len(failed)} {what}:")
        for src, reason in failed:
            _err(f"  {src}: {reason}")


def _open_index(path: str, *, verify: bool = True) -> Any:
    from .local_index import load_index

    return load_index(path, verify=verify)


def _index_model(args: argparse.Namespace, index: Any) -> str:
    model = args.model or index.metadata.get("model")
    if not model:
        raise CLIError(f"{args.index} does not record its model; pass --model NAME|PATH")
    return str(model)


def _search(
    args: argparse.Namespace, index: Any, images: Sequence[str], k: int, *, labels: bool = False
) -> tuple[Any, Any, Any, list[str], dict[str, Any]]:
    """Search ``index`` for query images: ``(distances, ids, penalised or None, source,
    label maps)``. A query whose path is in the index is looked up (its stored code or
    signature), the others are segmented (and their features extracted) here."""
    import numpy as np

    threads = getattr(args, "threads", 0)
    for img in images:
        if not Path(img).is_file():
            raise CLIError(f"no such image file: {img}")
    keys = [_key_of(i) for i in images]
    known: dict[str, int] = {}
    if index.has_keys and not args.resegment and not labels:
        wanted = set(keys)
        for i, key in zip(index.ids().tolist(), index.keys()):
            if key in wanted:
                known[key] = i
    todo = list(dict.fromkeys(key for key in keys if key not in known))
    sbs = _signature_of(index) == "sbs"
    got: dict[str, Any] = {}
    label_maps: dict[str, Any] = {}
    if todo:
        md = index.metadata
        seg = _load_segmenter(args, _index_model(args, index))
        classes = index.layout.num_classes if sbs else index.num_classes
        if seg.num_classes != classes and md.get("num_classes") is None:
            raise CLIError(
                f"model {seg.meta.name} has {seg.num_classes} classes but the index "
                f"has {classes}; pass the index's --model"
            )
        res = _segment_codes(
            args,
            seg,
            todo,
            levels=index.layout.levels if sbs else 0,
            pyramid=index.layout.pyramid if sbs else False,
            ignore_index=md.get("ignore_index"),
            num_classes=classes,
            labels=labels or not sbs,
        )
        if res.failed:
            src, reason = res.failed[0]
            raise CLIError(f"cannot read query image {src}: {reason}")
        if res.labels is not None:
            label_maps = dict(zip(res.paths, res.labels))
        if sbs:
            got = dict(zip(res.paths, res.codes))
        else:
            from .features import extract_features

            feats = extract_features(list(res.paths), index.method, threads=threads,
                                     progress=False)
            sig, hist = index.encode(feats, list(res.labels), threads=threads,
                                     return_histograms=True)
            got = {p: (sig[j], hist[j:j + 1]) for j, p in enumerate(res.paths)}
    source = ["index" if key in known else "segmented" for key in keys]
    if sbs:
        codes = np.zeros((len(keys), index.layout.stride), dtype=np.uint8)
        for j, key in enumerate(keys):
            codes[j] = index.reconstruct(known[key]) if key in known else got[key]
        dist, ids = index.search(codes, k, threads=threads)
        return dist, ids, None, source, label_maps
    parts = []
    for key in keys:
        if key in known:
            stored, h = index.reconstruct([known[key]])
            parts.append((stored, h))
        else:
            parts.append(got[key])
    out = [index.search_signatures(q, k, histograms=h, threads=threads,
                                   return_penalised=True) for q, h in parts]
    dist, ids, pen = (np.concatenate([o[i] for o in out]) for i in range(3))
    return dist, ids, pen, source, label_maps


# ----------------------------------------------------------------------------- commands
def _signature_of(index: Any) -> str:
    return str(getattr(index, "signature", "sbs"))


def cmd_index(args: argparse.Namespace) -> int:
    from . import __version__
    from .local_index import load_index

    out = Path(args.output)
    if out.is_dir():
        raise CLIError(f"-o must name an index file, got the folder {out}")
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: folder {out.parent} does not exist")
    existing = None
    if out.exists():
        if args.append:
            existing = load_index(out, mmap=False)
        elif not args.overwrite:
            raise CLIError(
                f"{out} exists; pass --append to add new images to it or --overwrite to replace it"
            )
    signature = args.signature or (_signature_of(existing) if existing is not None else "sbs")
    if existing is not None and signature != _signature_of(existing):
        raise CLIError(
            f"--signature {signature} differs from the index's {_signature_of(existing)}; "
            "build a new index for another signature"
        )
    if signature != "sbs" and (args.levels is not None or args.pyramid):
        raise CLIError("--levels / --pyramid apply to --signature sbs only")
    t0 = time.perf_counter()
    paths = _discover(args.folders)
    if not paths:
        raise CLIError(f"no images found under {' '.join(args.folders)}")
    if existing is not None:
        md = existing.metadata
        if signature == "sbs":
            if args.levels is not None and args.levels != existing.layout.levels:
                raise CLIError(
                    f"--levels {args.levels} differs from the index's levels "
                    f"{existing.layout.levels}; build a new index for other levels"
                )
            if args.pyramid and not existing.layout.pyramid:
                raise CLIError("--pyramid differs from the index (built without it)")
            levels, pyramid = existing.layout.levels, existing.layout.pyramid
        else:
            levels, pyramid = 0, False
        model = args.model or md.get("model") or DEFAULT_MODEL
        if args.model and md.get("model") and args.model != md.get("model"):
            raise CLIError(
                f"--model {args.model} differs from the index's model {md.get('model')}; "
                "codes of different models cannot be mixed"
            )
        ignore_index = md.get("ignore_index") if args.ignore_index is None else args.ignore_index
        if ignore_index != md.get("ignore_index"):
            raise CLIError(
                f"--ignore-index {args.ignore_index} differs from the index's "
                f"{md.get('ignore_index')}"
            )
        have = set(existing.keys()) if existing.has_keys else set()
        new_paths = [p for p in paths if p not in have]
        _log(args, f"{len(paths)} images found, {len(paths) - len(new_paths)} already in {out}")
        if not new_paths:
            _log(args, "nothing new to add")
            print(f"{out}: {len(existing)} images (unchanged)")
            return 0
    else:
        model = args.model or DEFAULT_MODEL
        levels = 0 if signature != "sbs" else (
            DEFAULT_LEVELS if args.levels is None else args.levels)
        pyramid, ignore_index = args.pyramid, args.ignore_index
        new_paths = paths
        _log(args, f"{len(paths)} images found")
    if signature != "sbs" and existing is None:
        _check_local_args(args)
    elif signature != "sbs":
        _check_detector(existing.method, signature)
    if model != DEFAULT_MODEL and Path(model).is_file():
        model = os.path.abspath(model)
    seg = _load_segmenter(args, model)
    if ignore_index is not None and not 0 <= ignore_index < seg.num_classes:
        raise CLIError(
            f"--ignore-index must be a class id in [0, {seg.num_classes}), got {ignore_index}"
        )
    if existing is not None:
        have = existing.layout.num_classes if signature == "sbs" else existing.num_classes
        if seg.num_classes != have:
            raise CLIError(f"model {model} has {seg.num_classes} classes, the index {have}")
    res = _segment_codes(
        args,
        seg,
        new_paths,
        levels=levels,
        pyramid=pyramid,
        ignore_index=ignore_index,
        labels=signature != "sbs",
    )
    _report_failed(res.failed)
    if existing is not None:
        index = existing
        index.metadata["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        index.metadata["library_version"] = __version__
        if not len(res.paths):
            print(f"{out}: {len(index)} images (unchanged; {len(res.failed)} skipped)")
            return 0
    else:
        metadata = {
            "model": model,
            "model_name": seg.meta.name,
            "num_classes": seg.num_classes,
            "class_names": list(seg.class_names),
            "signature": signature,
            "ignore_index": ignore_index,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "library_version": __version__,
            "device": str(seg.device),
        }
        if signature == "sbs":
            from .index import SBSIndex

            metadata.update(levels=levels, pyramid=bool(pyramid))
            index = SBSIndex(res.layout, metadata=metadata)
    if len(res.paths) and signature == "sbs":
        index.add(res.codes, keys=list(res.paths))
    elif len(res.paths):
        feats = _features(args, list(res.paths), args.method if existing is None
                          else existing.method)
        if existing is None:
            index = _new_local_index(args, signature, seg.num_classes, ignore_index, feats,
                                     metadata)
        try:
            index.add(feats, list(res.labels), keys=list(res.paths), threads=args.threads)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if existing is None and not len(res.paths):
        raise CLIError(f"none of the {len(new_paths)} images could be read; no index written")
    index.save(out)
    dt = time.perf_counter() - t0
    counts = f"{len(index)} images ({len(res.paths)} added, {len(res.failed)} skipped)"
    if signature == "sbs":
        lay = index.layout
        what = (f"{lay.num_classes} classes, {lay.blocks} blocks, {lay.nbits} bits / "
                f"{lay.stride} bytes per code")
    else:
        what = _describe_local(index)
    print(f"{out}: {counts} [{what}] in {dt:.1f} s")
    return 0


def _check_detector(method: str, signature: str) -> None:
    from .features import make_detector

    try:
        make_detector(method)
    except ImportError as exc:
        raise CLIError(f"--signature {signature} needs OpenCV ({exc})") from None


def _epsilon(args: argparse.Namespace) -> float | str | None:
    """--filter / --no-filter / --epsilon -> a threshold, None (off) or "auto"."""
    if args.filter is False:
        return None
    if args.epsilon is not None:
        return args.epsilon
    return 0.9 if args.filter else "auto"


def _check_local_args(args: argparse.Namespace) -> None:
    import math

    if args.epsilon is not None and (not math.isfinite(args.epsilon) or args.epsilon < 0):
        raise CLIError(f"--epsilon must be a finite number >= 0, got {args.epsilon}")
    if not math.isfinite(args.histogram_weight) or args.histogram_weight < 0:
        raise CLIError(f"--histogram-weight must be a finite number >= 0, got "
                       f"{args.histogram_weight}")
    _check_detector(args.method, args.signature)
    if getattr(args, "vocab", None) is not None:  # read it before the slow steps
        from .sbovp import Vocabulary

        if args.vocab_root is not None:
            raise CLIError("give --vocab or --vocab-root, not both")
        if not Path(args.vocab).is_file():
            raise CLIError(f"--vocab: no such file: {args.vocab}")
        vocab = Vocabulary.load(args.vocab)
        if vocab.method is not None and vocab.method != args.method:
            raise CLIError(f"--vocab {args.vocab} was fitted on {vocab.method} descriptors, "
                           f"not {args.method}; pass --method {vocab.method}")
        args._vocab = vocab


def _features(args: argparse.Namespace, paths: list[str], method: str) -> Any:
    """Keypoints of ``paths``, through the feature cache shared with ``semcbir eval``."""
    from .eval.evaluate import features_cached

    return features_cached(
        paths,
        method,
        threads=args.threads,
        progress=not getattr(args, "quiet", False) and len(paths) > 1,
        use_cache=not getattr(args, "no_cache", False),
        log=None if getattr(args, "quiet", False) else _err,
    )


def _vocabulary_features(args: argparse.Namespace) -> Any:
    """Features of the --vocab-root images (None without the option)."""
    from .eval.datasets import find_images

    if args.vocab_root is None:
        return None
    try:
        vpaths = [str(p) for p in find_images(args.vocab_root)]
    except (FileNotFoundError, NotADirectoryError):
        raise CLIError(f"--vocab-root: no such folder: {args.vocab_root}") from None
    if not vpaths:
        raise CLIError(f"--vocab-root: no images under {args.vocab_root}")
    _log(args, f"vocabulary set: {len(vpaths)} images under {args.vocab_root}")
    return _features(args, vpaths, args.method)


def _check_vocabulary_size(train: Any, words: int) -> None:
    total = sum(len(f) for f in train)
    if total < words:
        raise CLIError(
            f"--words {words} needs at least as many training descriptors, the vocabulary "
            f"set has {total}; use fewer words or more images"
        )


def _new_local_index(args: argparse.Namespace, signature: str, num_classes: int,
                     ignore_index: int | None, feats: Any, metadata: dict[str, Any]) -> Any:
    from .local_index import LocalIndex
    from .sbovp import Vocabulary

    vocab = None
    if signature == "sbovp":
        if args.vocab is not None:
            vocab = args._vocab
            _log(args, f"vocabulary {args.vocab}: {vocab.n_words} words ({vocab.method})")
        else:
            train = _vocabulary_features(args)
            train = feats if train is None else train
            _check_vocabulary_size(train, args.words)
            _log(args, f"fitting a {args.words}-word vocabulary on "
                 f"{sum(len(f) for f in train)} descriptors ...")
            vocab = Vocabulary.fit(train, args.words, seed=args.vocab_seed, threads=args.threads)
        metadata["vocabulary_set"] = (
            os.path.abspath(args.vocab) if args.vocab else
            os.path.abspath(args.vocab_root) if args.vocab_root else "the indexed images")
    try:
        return LocalIndex(
            signature,
            num_classes=num_classes,
            method=args.method,
            vocabulary=vocab,
            n=args.phrase_n,
            normalize=None if args.normalize == "none" else args.normalize,
            semantic_words=args.semantic_words,
            histogram_weight=args.histogram_weight,
            epsilon=_epsilon(args),
            ignore_index=ignore_index,
            metadata=metadata,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _setting_text(index: Any) -> str:
    if _signature_of(index) == "sbs":
        return f"{index.layout.blocks} blocks"
    return _describe_local(index)


def _describe_local(index: Any) -> str:
    p = index.params
    filt = "no filter" if p["epsilon"] is None else f"filter epsilon {p['epsilon']:g}"
    if p["signature"] == "sbovp":
        words = "semantic" if p["semantic_words"] else "plain"
        hist = (f"histogram weight {p['histogram_weight']:g}" if p["histogram_weight"]
                else "no histogram")
        return (f"sbovp, {p['method']}, L={p['n_words']} {words} words, n={p['n']}, "
                f"normalize {p['normalize']}, {hist}, {p['num_classes']} classes, {filt}")
    return (f"hybrid, {p['method']}, {p['num_classes']} classes x {p['descriptor_dim']} "
            f"values, {filt}")


def cmd_search(args: argparse.Namespace) -> int:
    index = _open_index(args.index)
    if len(index) == 0:
        raise CLIError(f"{args.index} is empty")
    dist, ids, pen, source, _ = _search(args, index, args.images, args.k)
    sbs = pen is None
    out = []
    for j, img in enumerate(args.images):
        keys = index.keys_of(ids[j]) if index.has_keys else [None] * ids.shape[1]
        results = []
        for r, (i, d, key) in enumerate(zip(ids[j], dist[j], keys)):
            if i < 0:
                continue
            item: dict[str, Any] = {"rank": r + 1, "id": int(i),
                                    "distance": int(d) if sbs else float(d), "key": key}
            if not sbs:
                item["penalised"] = bool(pen[j, r])
            results.append(item)
        out.append({"query": img, "code_from": source[j], "results": results})
    if args.json:
        print(json.dumps({"index": args.index, "signature": _signature_of(index), "k": args.k,
                          "queries": out}, indent=1))
        return 0
    for q in out:
        print(
            f"query {q['query']}  ({'looked up in the index' if q['code_from'] == 'index' else 'segmented'})"
        )
        print(f"  {'rank':>4}  {'distance':>8}  {'id':>7}  path")
        for r in q["results"]:
            d = f"{r['distance']:>8}" if sbs else f"{r['distance']:>8.4f}"
            flag = "  (filtered)" if r.get("penalised") else ""
            print(f"  {r['rank']:>4}  {d}  {r['id']:>7}  {r['key'] or ''}{flag}")
    if not sbs and pen.any():
        print("(filtered): outside the semantic-histogram filter, ranked after the others")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .index import FORMAT_VERSION

    index = _open_index(args.index, verify=not args.no_verify)
    sbs = _signature_of(index) == "sbs"
    md = dict(index.metadata)
    classes = md.pop("class_names", None)
    info: dict[str, Any] = {
        "file": os.path.abspath(args.index),
        "bytes": os.path.getsize(args.index),
        "format_version": FORMAT_VERSION,
        "checksum": "skipped" if args.no_verify else "ok",
        "signature": _signature_of(index),
        "count": len(index),
        "has_keys": index.has_keys,
    }
    if sbs:
        lay = index.layout
        info["layout"] = {**lay.to_dict(), "blocks": lay.blocks}
    else:
        info.update({k: v for k, v in index.info().items() if k in ("nnz", "params",
                                                                     "vocabulary")})
    info.update(metadata=md, num_class_names=len(classes) if classes else 0)
    if args.json:
        info["metadata"]["class_names"] = classes
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"index     {info['file']} ({info['bytes']:,} bytes, format v{FORMAT_VERSION}, checksum {info['checksum']})"
    )
    print(f"images    {len(index)}" + (" (with paths)" if index.has_keys else ""))
    if sbs:
        print(
            f"codes     {lay.num_classes} classes x {lay.blocks} blocks (levels={lay.levels}"
            f"{', pyramid' if lay.pyramid else ''}) = {lay.nbits} bits, {lay.nbytes} bytes, "
            f"stride {lay.stride}"
        )
    else:
        print(f"signature {_describe_local(index)}")
        print(f"storage   {index.nnz:,} non-zeros ({index.nnz / max(len(index), 1):.1f} "
              "per image)")
    for k in (
        "model",
        "model_name",
        "ignore_index",
        "vocabulary_set",
        "created",
        "updated",
        "library_version",
        "device",
    ):
        if k in md:
            print(f"{k.replace('_', ' '):<9} {md[k]}")
    if classes:
        shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
        print(f"classes   {len(classes)}: {shown}")
    if index.has_keys and len(index):
        ks = index.keys()
        print(f"first     {ks[0]}")
        print(f"last      {ks[-1]}")
    return 0


_DATASET_LABELS = {"corel1k": "Corel-1K (Wang)", "msrc": "MSRC v1", "folders": "folders"}


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .eval.datasets import load_dataset
    from .eval.evaluate import evaluate_sbs

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset, args.root)
    if args.limit:
        ds = ds.limit(args.limit)
    if len(np.unique(ds.categories)) < 2:
        raise CLIError(
            f"the data set has a single category ({len(ds)} images): nothing to "
            "tell apart; raise --limit or check --root"
        )
    settings: dict[str, Any] = {
        "dataset_label": _DATASET_LABELS.get(args.dataset, args.dataset)
        if args.dataset != "folders"
        else Path(ds.root).name,
        "limit": args.limit,
    }
    if args.oracle:
        if not ds.has_ground_truth:
            raise CLIError(
                f"--oracle needs ground-truth label maps, and data set {args.dataset} "
                f"at {ds.root} has none (MSRC: labels/<stem>.png)"
            )
        _log(args, f"reading {len(ds)} ground-truth label maps from {ds.root} ...")
        maps = [ds.read_label_map(i) for i in range(len(ds))]
        assert ds.label_classes is not None
        num_classes = len(ds.label_classes)
        ignore = ds.ignore_index if args.ignore_index is None else args.ignore_index
        settings.update(segmentation="oracle", class_names=ds.label_classes)
    else:
        from .eval.cache import segment_cached

        model = args.model
        if model != DEFAULT_MODEL and Path(model).is_file():
            model = os.path.abspath(model)
        try:
            maps, minfo = segment_cached(
                [str(p) for p in ds.images],
                model=model,
                device=args.device,
                dtype=args.dtype,
                batch_size=args.batch_size,
                progress=not args.quiet,
                use_cache=not args.no_cache,
                log=None if args.quiet else _err,
            )
        except ImportError as exc:
            raise CLIError(
                f"segmentation needs the 'segment' extra ({exc}); install it with "
                "pip install 'semcbir_fast[segment]', or use --oracle"
            ) from None
        num_classes = minfo["num_classes"]
        ignore = args.ignore_index
        settings.update(
            segmentation=f"model {minfo['model_name']}",
            model=minfo["model"],
            model_path=minfo["model_path"],
            label_cache=minfo["cache"],
            device=minfo.get("device"),
            dtype=args.dtype or "float32",
            class_names=minfo["class_names"],
        )
    if ignore is not None and not 0 <= ignore < num_classes:
        raise CLIError(f"--ignore-index must be a class id in [0, {num_classes}), got {ignore}")
    if args.exclude_query and args.mode != "query-in-db":
        raise CLIError("--exclude-query applies to --mode query-in-db only")
    if args.signature != "sbs":
        return _eval_local(args, ds, maps, num_classes, ignore, settings, t0)
    result = evaluate_sbs(
        ds,
        maps,
        num_classes=num_classes,
        levels=args.levels,
        ignore_index=ignore,
        pyramid=args.pyramid,
        mode=args.mode,
        exclude_query=args.exclude_query,
        queries_per_category=args.queries_per_category,
        ks=args.ks,
        top=max(args.gallery_k, 1),
        threads=args.threads,
        settings=settings,
        keep_label_maps=args.report is not None,
    )
    return _finish_eval(args, result, t0)


def _print_dataset_line(s: dict[str, Any]) -> None:
    print(
        f"{s['dataset_label']}: {s['images']} images, {s['categories']} categories, "
        f"mode {s['mode']}{' (query excluded)' if s['exclude_query'] else ''}, "
        f"segmentation: {s['segmentation']}"
    )


def _eval_local(
    args: argparse.Namespace,
    ds: Any,
    maps: Any,
    num_classes: int,
    ignore: int | None,
    settings: dict[str, Any],
    t0: float,
) -> int:
    """``semcbir eval --signature sbovp|hybrid``."""
    from .eval.evaluate import evaluate_signature

    _check_local_args(args)
    vocab_feats = _vocabulary_features(args) if args.signature == "sbovp" else None
    feats = _features(args, [str(p) for p in ds.images], args.method)
    if args.signature == "sbovp":
        _check_vocabulary_size(vocab_feats if vocab_feats is not None else feats,
                               max(args.words))
    settings = dict(settings)
    if args.signature == "sbovp":
        settings["vocabulary_set"] = (
            os.path.abspath(args.vocab_root) if args.vocab_root else "the evaluated set"
        )
    result = evaluate_signature(
        ds,
        maps,
        signature=args.signature,
        num_classes=num_classes,
        features=feats,
        method=args.method,
        vocab_features=vocab_feats,
        n_words=args.words,
        n=args.phrase_n,
        semantic_words=args.semantic_words,
        normalize=None if args.normalize == "none" else args.normalize,
        histogram_weight=args.histogram_weight,
        epsilon=_epsilon(args),
        seed=args.vocab_seed,
        ignore_index=ignore,
        mode=args.mode,
        exclude_query=args.exclude_query,
        queries_per_category=args.queries_per_category,
        ks=args.ks,
        top=max(args.gallery_k, 1),
        threads=args.threads,
        settings=settings,
        keep_label_maps=args.report is not None,
    )
    s = result.settings
    extra = ""
    if args.signature == "sbovp":
        extra = (
            f", {'semantic' if s['semantic_words'] else 'plain'} words, "
            f"normalize {s['normalize']}, histogram weight {s['histogram_weight']:g}, "
            f"vocabulary fitted on {s['vocabulary_set']}"
        )
    return _finish_eval(
        args,
        result,
        t0,
        f"signature {args.signature}: {args.method}, "
        f"{s['keypoints_per_image']['mean']:.0f} keypoints per image, histogram filter "
        f"{s['filter']}{extra}",
    )


def _finish_eval(args: argparse.Namespace, result: Any, t0: float,
                 about: str | None = None) -> int:
    """Time, --report, then --json or the table (with ``about`` under the data set line)."""
    result.settings["seconds"] = round(time.perf_counter() - t0, 2)
    _maybe_report(args, result)
    if args.json:
        d = result.to_dict()
        d["settings"].pop("class_names", None)
        print(json.dumps(d, indent=1, default=str))
        return 0
    _print_dataset_line(result.settings)
    if about:
        print(about)
    print(result.table())
    if args.dataset == "corel1k" and all(20 in r.p_at_k for r in result.results):
        from .eval.paper import TABLE7_TOP20

        ours = ", ".join(f"{r.name} {r.p_at_k[20]:.4f}" for r in result.results)
        others = ", ".join(f"{k} {v:.2f}" for k, v in TABLE7_TOP20.items())
        print(f"top-20 precision (paper 000 Table 7): ours {ours}; paper: {others}")
    return 0


def _maybe_report(args: argparse.Namespace, result: Any) -> None:
    """``--report DIR``: write the report folder and say where."""
    if not args.report:
        return
    command = "semcbir " + shlex.join(getattr(args, "argv", []))
    try:
        from .report import write_report
    except ImportError as exc:  # pragma: no cover - matplotlib missing
        raise CLIError(f"--report needs matplotlib ({exc}): pip install matplotlib") from None
    files = write_report(
        result,
        args.report,
        gallery_queries=args.gallery_queries or None,
        gallery_k=args.gallery_k,
        embed=args.embed,
        command=command,
    )
    _log(
        args,
        f"report written to {files['markdown'].parent}/ "
        f"({', '.join(sorted(p.name for p in files.values()))})",
    )


def _category_of(path: str, rule: str) -> str | None:
    p = Path(path)
    try:
        if rule == "corel1k":
            return str(int(p.stem) // 100)
        if rule == "msrc":
            return str(int(p.stem.split("_")[0]))
        if rule == "parent":
            return p.parent.name
    except ValueError:
        return None
    return None


def cmd_gallery(args: argparse.Namespace) -> int:
    from .gallery import GalleryHit, GalleryRow, write_gallery

    index = _open_index(args.index)
    if len(index) == 0:
        raise CLIError(f"{args.index} is empty")
    if not index.has_keys:
        raise CLIError(f"{args.index} has no image paths (keys) to show")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CLIError(f"-o must be a folder, got the file {out}")
    dist, ids, pen, source, qmaps = _search(args, index, args.images, args.k,
                                            labels=args.overlay)
    hit_maps: dict[str, Any] = dict(qmaps)
    if args.overlay:
        need = sorted({k for row in ids for k in index.keys_of(row) if k} - set(hit_maps))
        if need:
            seg = _load_segmenter(args, _index_model(args, index))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                r = seg.segment(need, batch_size=args.batch_size, progress=False, on_error="skip")
            hit_maps.update({p: m for p, m in zip(need, r.labels) if m is not None})
    rule = args.categories
    rows = []
    for j, img in enumerate(args.images):
        qkey = _key_of(img)
        qcat = _category_of(qkey, rule) if rule != "none" else None
        hits = []
        for i, d, key in zip(ids[j], dist[j], index.keys_of(ids[j])):
            if i < 0 or key is None:
                continue
            cat = _category_of(key, rule) if rule != "none" else None
            hits.append(
                GalleryHit(
                    path=key,
                    distance=int(d) if pen is None else float(d),
                    id=int(i),
                    category=cat,
                    relevant=None if qcat is None or cat is None else cat == qcat,
                    label_map=hit_maps.get(key),
                )
            )
        rows.append(
            GalleryRow(
                query=qkey,
                hits=hits,
                category=qcat,
                label_map=hit_maps.get(qkey),
                title=f"{Path(img).name} ({source[j]})",
            )
        )
    md = index.metadata
    html_path = write_gallery(
        rows,
        out,
        title=f"semcbir: {len(rows)} queries on {Path(args.index).name}",
        subtitle=(
            f"{len(index)} images, model {md.get('model_name', md.get('model', '?'))}, "
            f"{_setting_text(index)}, top {args.k}"
        ),
        embed=args.embed,
        class_names=md.get("class_names"),
    )
    print(html_path)
    return 0


# ----------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``semcbir`` command line; returns the exit status (0 = success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a syntax error (argparse printed it)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEMCBIR_DEBUG", "") not in ("", "0")
    from .index import IndexFormatError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _err(f"semcbir {args.command}: interrupted")
        return 130
    except CLIError as exc:
        if debug:
            raise
        _err(f"semcbir {args.command}: error: {exc}")
        return 1
    except (
        IndexFormatError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        ValueError,
        KeyError,
    ) as exc:
        if debug:
            raise
        msg = _fmt_os_error(exc) if isinstance(exc, OSError) else str(exc)
        if isinstance(exc, KeyError):
            msg = str(exc.args[0]) if exc.args else "key error"
        _err(f"semcbir {args.command}: error: {msg.splitlines()[0] if msg else type(exc).__name__}")
        return 1
    except BrokenPipeError:  # e.g. `semcbir search ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
