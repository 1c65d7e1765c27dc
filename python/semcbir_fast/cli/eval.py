"""``semcbir eval --dataset ...``: retrieval quality of a signature on a labelled data set."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

from ._common import (
    DEFAULT_MODEL,
    CLIError,
    add_model_options,
    add_signature_options,
    check_foreign_options,
    err,
    log,
    model_spec,
    positive_int,
    signature_params,
    state_training_paths,
)

HELP = "measure retrieval quality on a labelled data set"

_DATASET_LABELS = {"corel1k": "Corel-1K (Wang)", "msrc": "MSRC v1", "folders": "folders"}


def register(sub: Any) -> None:
    from ..signatures import DEFAULT_SIGNATURE, list_signatures

    p = sub.add_parser(
        "eval", help=HELP,
        description="Segment a data set (or use its ground truth with --oracle), encode the "
        "signature (every combination of the list-valued options is one setting: SBS "
        "levels, SBoVP vocabulary sizes, ...), rank the whole database for every query and "
        "print MAP, P@R and P@k per setting (paper 000 Table 3 layout for SBS).")
    p.add_argument("--dataset", required=True, nargs="+",
                   choices=["corel1k", "msrc", "folders"],
                   help="layout: corel1k (<id>.jpg, category id//100), msrc "
                   "(<group>_<k>_s.jpg, labels/ ground truth), folders (one sub-folder per "
                   "category); several (with their default folders) give one column each "
                   "of the signature table")
    p.add_argument("--root", default=None,
                   help="data set folder (default: $SEMCBIR_DATA or ../shared/data, + "
                   "corel1k / msrc_v1)")
    p.add_argument("--signature", default=[DEFAULT_SIGNATURE], nargs="+",
                   choices=[*list_signatures(), "all"],
                   help=f"signature kind (default {DEFAULT_SIGNATURE}); several, or all (every "
                   "registered signature that runs without a file of its own: deephash "
                   "needs --hash-model), print one Markdown table of them all (paper 000 "
                   "Table 6 layout, each at its evaluation defaults, the published rows "
                   "beside them, per-category AP)")
    add_signature_options(p, several=True, state_file=False)
    p.add_argument("--oracle", action="store_true",
                   help="use the ground-truth label maps instead of a model (msrc; with "
                   "several data sets: where a data set has them)")
    p.add_argument("--ignore-index", type=int, default=None, metavar="CLASS",
                   help="a class id to treat as void (default: none for a model, the data "
                   "set's void class with --oracle)")
    p.add_argument("--mode", choices=["query-in-db", "disjoint"], default="query-in-db",
                   help="query-in-db: every image is a query and stays in the database "
                   "(paper 000 Table 1); disjoint: split queries from the database")
    p.add_argument("--queries-per-category", type=positive_int, default=10,
                   help="disjoint mode: queries taken from each category (10)")
    p.add_argument("--exclude-query", action="store_true",
                   help="query-in-db: drop each query from its own ranking")
    p.add_argument("-k", type=positive_int, nargs="+", default=[10, 20], dest="ks",
                   help="cut-offs for P@k (default 10 20; 20 = paper 000 Table 7)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="use at most N images, spread evenly over the categories (a quick run)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write report.md, report.json, PNG plots and gallery.html into DIR")
    p.add_argument("--gallery-queries", type=int, default=1, metavar="N",
                   help="report gallery: the first N queries of each category (1; 0 = none)")
    p.add_argument("--gallery-k", type=positive_int, default=10,
                   help="report gallery: results per query")
    p.add_argument("--embed", action="store_true", help="embed gallery thumbnails in the HTML")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--threads", type=int, default=0,
                   help="encode/search threads (0 = all cores)")
    add_model_options(p, model_default=DEFAULT_MODEL)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func=run, _parser=p)


def _label_maps(args: argparse.Namespace, ds: Any, settings: dict[str, Any], *,
                oracle: bool) -> tuple[list[Any], int, int | None]:
    """Label maps (ground truth or the model's, cached), classes and void label."""
    if oracle:
        if not ds.has_ground_truth:
            raise CLIError(f"--oracle needs ground-truth label maps, and data set "
                           f"{ds.name} at {ds.root} has none (MSRC: labels/<stem>.png)")
        log(args, f"reading {len(ds)} ground-truth label maps from {ds.root} ...")
        maps = [ds.read_label_map(i) for i in range(len(ds))]
        assert ds.label_classes is not None
        settings.update(segmentation="oracle", class_names=ds.label_classes)
        ignore = ds.ignore_index if args.ignore_index is None else args.ignore_index
        return maps, len(ds.label_classes), ignore
    from ..eval.cache import segment_cached

    try:
        maps, minfo = segment_cached(
            [str(p) for p in ds.images], model=model_spec(args.model), device=args.device,
            dtype=args.dtype, runtime=args.runtime, batch_size=args.batch_size, progress=not args.quiet,
            use_cache=not args.no_cache, log=None if args.quiet else err)
    except ImportError as exc:
        raise CLIError(f"segmentation needs the 'segment' extra ({exc}); install it with "
                       "pip install 'semcbir_fast[segment]', or use --oracle") from None
    settings.update(segmentation=f"model {minfo['model_name']}", model=minfo["model"],
                    model_path=minfo["model_path"], label_cache=minfo["cache"],
                    device=minfo.get("device"), runtime=minfo["runtime"],
                    dtype=args.dtype or "float32",
                    class_names=minfo["class_names"])
    return maps, minfo["num_classes"], args.ignore_index


def _features(args: argparse.Namespace, paths: list[str], method: str) -> Any:
    from ..eval.cache import features_cached

    return features_cached(paths, method, threads=args.threads,
                           progress=not args.quiet and len(paths) > 1,
                           use_cache=not args.no_cache, log=None if args.quiet else err)


def _fit_inputs(args: argparse.Namespace, cls: Any, method: str | None,
                settings: dict[str, Any]) -> Any:
    """Training set of the learned state (``--<state>-root``), or None = the evaluated set."""
    if not cls.state_flags:
        return None
    from ..signatures import Inputs

    root = getattr(args, cls.state_flags[1], None)
    settings[f"{cls.state_name}_set"] = (str(Path(root).resolve()) if root
                                         else "the evaluated set")
    paths = state_training_paths(args, cls)
    if paths is None:
        return None
    return Inputs([], _features(args, paths, method) if method else None, paths)


def _signature_classes(args: argparse.Namespace) -> list[Any]:
    """The classes ``--signature`` names (``all``: every registered one whose default
    setting can run, the others named on stderr)."""
    from ..signatures import get_signature, list_signatures

    names = list(args.signature)
    if "all" not in names:
        if len(set(names)) != len(names):
            raise CLIError(f"--signature names a signature twice: {' '.join(names)}")
        return [get_signature(n) for n in names]
    if len(names) > 1:
        raise CLIError("--signature all stands alone")
    out = []
    for n in list_signatures():
        cls = get_signature(n)
        try:
            params = signature_params(args, cls, several=True)[0]
            cls(params, num_classes=1).check_available()
        except (ValueError, ImportError, CLIError) as exc:
            err(f"--signature all: skipping {n} ({exc})")
            continue
        out.append(cls)
    return out


def _load(args: argparse.Namespace, name: str) -> Any:
    import numpy as np

    from ..eval.datasets import load_dataset

    ds = load_dataset(name, args.root)
    if args.limit:
        ds = ds.limit(args.limit)
    if len(np.unique(ds.categories)) < 2:
        raise CLIError(f"the data set has a single category ({len(ds)} images): nothing to "
                       "tell apart; raise --limit or check --root")
    return ds


def _evaluate(args: argparse.Namespace, name: str, ds: Any, cls: Any, *, oracle: bool,
              labels: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Evaluate ``cls`` at the settings the options ask for on ``ds``; the result and a
    line about it. ``labels`` keeps the label maps between signatures of one data set."""
    from ..eval.evaluate import evaluate
    from ..pipeline import decode_pass
    from ..signatures import Inputs

    params = signature_params(args, cls, several=True)
    settings: dict[str, Any] = {
        "dataset_label": _DATASET_LABELS.get(name, name)
        if name != "folders" else Path(ds.root).name,
        "limit": args.limit,
    }
    # one decode of each image for the segmentation and the signature's own readers
    # (evaluate() joins this scope; bound: SEMCBIR_DECODE_MEMO_MB)
    with decode_pass(cls.requires):
        if "labels" in cls.requires or oracle:
            labels = {} if labels is None else labels
            if "maps" not in labels:
                labels["settings"] = {}
                labels["maps"] = _label_maps(args, ds, labels["settings"], oracle=oracle)
            maps, num_classes, ignore = labels["maps"]
            settings.update(labels["settings"])
        else:  # cnn, neural-codes read the image files alone: no segmentation model is run
            maps, num_classes, ignore = [], 1, None
            settings.update(segmentation="image files only")
        if ignore is not None and not 0 <= ignore < num_classes:
            raise CLIError(f"--ignore-index must be a class id in [0, {num_classes}), got {ignore}")
        if args.exclude_query and args.mode != "query-in-db":
            raise CLIError("--exclude-query applies to --mode query-in-db only")
        sigs = [cls(p, num_classes=num_classes, ignore_index=ignore) for p in params]
        try:
            sigs[0].check_available()
        except ImportError as exc:
            raise CLIError(f"--signature {cls.name} needs OpenCV ({exc})") from None
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        method = sigs[0].feature_method
        fit_inputs = _fit_inputs(args, cls, method, settings)
        feats = _features(args, [str(p) for p in ds.images], method) if method else None
        try:
            result = evaluate(
                ds, sigs, Inputs(list(maps), feats), fit_inputs=fit_inputs, mode=args.mode,
                exclude_query=args.exclude_query, queries_per_category=args.queries_per_category,
                ks=args.ks, top=max(args.gallery_k, 1), threads=args.threads, settings=settings,
                keep_label_maps=args.report is not None)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    about = f"signature {sigs[0].describe()}"
    if len(sigs) > 1:
        about += f" (first of {len(sigs)} settings)"
    s = result.settings
    if "keypoints_per_image" in s:
        about += f"; {s['keypoints_per_image']['mean']:.0f} keypoints per image"
    if f"{cls.state_name}_set" in s and "fit_seconds" in s:
        about += f"; {cls.state_name} fitted on {s[f'{cls.state_name}_set']}"
    return result, about


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    classes = _signature_classes(args)
    if not classes:
        raise CLIError("--signature all: no signature can run with these options")
    check_foreign_options(args, classes)
    names = list(dict.fromkeys(args.dataset))
    if len(classes) == 1 and len(names) == 1:
        ds = _load(args, names[0])
        result, about = _evaluate(args, names[0], ds, classes[0], oracle=args.oracle)
        return _finish(args, result, t0, about)
    return _run_table(args, names, classes, t0)


def _run_table(args: argparse.Namespace, names: list[str], classes: list[Any],
               t0: float) -> int:
    """Several signatures or data sets: one Markdown table (or --json) of them all."""
    from ..eval.summary import TableColumn, signature_table

    if args.report:
        raise CLIError("--report takes one signature on one data set")
    if args.root and len(names) > 1:
        raise CLIError("--root names one data set's folder: give one --dataset with it")
    columns = []
    for name in names:
        ds = _load(args, name)
        oracle = bool(args.oracle and ds.has_ground_truth)
        labels: dict[str, Any] = {}
        col = None
        for cls in classes:
            log(args, f"{name}: {cls.name} ...")
            result, _ = _evaluate(args, name, ds, cls, oracle=oracle, labels=labels)
            if col is None:
                col = TableColumn(f"{result.settings['dataset_label']}")
            col.results.append(result)
        assert col is not None
        seg = col.labelled().settings["segmentation"]
        if seg != "image files only":
            col.title += f" ({'ground truth' if seg == 'oracle' else seg})"
        columns.append(col)
    seconds = round(time.perf_counter() - t0, 2)
    if args.json:
        out = {"seconds": seconds, "columns": [
            {"title": c.title, "results": [_result_json(r) for r in c.results]}
            for c in columns]}
        print(json.dumps(out, indent=1, default=str))
        return 0
    print(signature_table(columns, command=_command(args)), end="")
    log(args, f"{len(classes)} signatures on {len(names)} data sets in {seconds:.0f} s")
    return 0


def _result_json(result: Any) -> dict[str, Any]:
    """``--json`` of one result (without the class-name list)."""
    d = result.to_dict()
    d["settings"].pop("class_names", None)
    return d


def _command(args: argparse.Namespace) -> str:
    """The command line that is running (for reports and tables)."""
    return "semcbir " + shlex.join(getattr(args, "argv", []))


def _finish(args: argparse.Namespace, result: Any, t0: float, about: str) -> int:
    """Time, --report, then --json or the table."""
    result.settings["seconds"] = round(time.perf_counter() - t0, 2)
    _maybe_report(args, result)
    if args.json:
        print(json.dumps(_result_json(result), indent=1, default=str))
        return 0
    print(result.run_line())
    print(about)
    print(result.table())
    top7 = result.published().get("table7_top20")
    if top7 and all(20 in r.p_at_k for r in result.results):
        ours = ", ".join(f"{r.name} {r.p_at_k[20]:.4f}" for r in result.results)
        others = ", ".join(f"{k} {v:.2f}" for k, v in top7.items())
        print(f"top-20 precision (paper 000 Table 7): ours {ours}; paper: {others}")
    _note_small_categories(result)
    return 0


def _note_small_categories(result: Any) -> None:
    """P@k cannot reach 1 when a category has fewer than k images (``--limit``): say so."""
    import numpy as np

    sizes = np.bincount(np.asarray(result.dataset.categories))
    smallest = int(sizes[sizes > 0].min()) if sizes.size else 0
    for k in result.settings.get("ks", []):
        if smallest < k:
            print(f"note: the smallest category has {smallest} images, so P@{k} is at most "
                  f"{smallest / k:.2f} here (the papers' numbers are for full categories)")


def _maybe_report(args: argparse.Namespace, result: Any) -> None:
    """``--report DIR``: write the report folder and say where."""
    if not args.report:
        return
    command = _command(args)
    try:
        from ..report import write_report
    except ImportError as exc:  # pragma: no cover - matplotlib missing
        raise CLIError(f"--report needs matplotlib ({exc}): pip install matplotlib") from None
    files = write_report(result, args.report, gallery_queries=args.gallery_queries or None,
                         gallery_k=args.gallery_k, embed=args.embed, command=command)
    log(args, f"report written to {files['markdown'].parent}/ "
        f"({', '.join(sorted(p.name for p in files.values()))})")
