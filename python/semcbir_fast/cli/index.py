"""``semcbir index FOLDER... -o INDEX``: segment images and build (or extend) an index."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ._common import (
    DEFAULT_MODEL,
    CLIError,
    add_engine_option,
    add_model_options,
    add_signature_options,
    check_engine,
    check_foreign_options,
    discover,
    flag_of,
    given_fields,
    index_model,
    load_model,
    log,
    model_spec,
    plural,
    positive_int,
    report_failed,
    set_engine,
    signature_params,
    state_training_paths,
)

HELP = "segment the images of folders and build (or extend) an index"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "index", help=HELP,
        description="Find images under FOLDER(s) recursively, segment them, encode their "
        "signatures (SBS codes by default; --signature for the others) and save an index "
        "file. Unreadable images are skipped and listed.")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="image folders (or image files)")
    p.add_argument("-o", "--output", required=True, metavar="INDEX", help="index file to write")
    from ..signatures import list_signatures

    p.add_argument("--signature", default=None, choices=list_signatures(),
                   help="signature kind (default sbs; with --append, the index's); "
                   "options of the other kinds do not apply")
    p.add_argument("--ignore-index", type=int, default=None, metavar="CLASS",
                   help="a class id to treat as void (not counted)")
    p.add_argument("--threads", type=int, default=0, help="feature threads (0 = all cores)")
    p.add_argument("--retry-unreadable", action="store_true",
                   help="with --append: try again the files an earlier run could not read "
                   "(skipped while they are unchanged)")
    p.add_argument("--checkpoint-every", type=positive_int, default=256, metavar="N",
                   help="save the index every N images, so that an interrupted run keeps "
                   "them and a rerun continues (256)")
    p.add_argument("--fit-on", nargs="+", default=None, metavar="FOLDER",
                   help="fit the signature's learned state (an SBoVP vocabulary, cnn "
                   "--whiten's whitening, the regions PCA, a fused signature's components') "
                   "on the images under FOLDER(s) instead of the indexed images")
    add_signature_options(p, several=False, state_file=True)
    add_engine_option(p, "store and search")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true",
                      help="add the images not yet in INDEX (same model and settings); an "
                      "index left by an interrupted run is always continued")
    mode.add_argument("--overwrite", action="store_true", help="replace INDEX if it exists")
    add_model_options(p, model_default=None)
    from ..distributed.cli import add_arguments as add_ray_arguments

    add_ray_arguments(p)  # --ray [ADDRESS]: the sharded build (semcbir_fast.distributed)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    p.set_defaults(func=run, _parser=p)


def _new_signature(args: argparse.Namespace, name: str, num_classes: int,
                   ignore_index: int | None) -> Any:
    from ..signatures import get_signature

    cls = get_signature(name)
    (params,) = signature_params(args, cls, several=False)
    sig = cls(params, num_classes=num_classes, ignore_index=ignore_index)
    if cls.state_flags:
        file_flag, root_flag = cls.state_flags
        path = getattr(args, file_flag, None)
        if path is not None:
            if getattr(args, root_flag, None) is not None:
                raise CLIError(f"give --{file_flag.replace('_', '-')} or "
                               f"--{root_flag.replace('_', '-')}, not both")
            if not Path(path).is_file():
                raise CLIError(f"--{file_flag.replace('_', '-')}: no such file: {path}")
            try:
                sig.load_state(path)
            except ValueError as exc:
                raise CLIError(str(exc)) from None
    return sig


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _known_unreadable(metadata: dict[str, Any], paths: list[str]) -> set[str]:
    """Paths recorded as unreadable by an earlier run whose size and mtime are unchanged."""
    rec = metadata.get("unreadable")
    if not isinstance(rec, dict):
        return set()
    return {p for p in paths if isinstance(rec.get(p), list) and rec[p][:2] == _stat(p)}


def _record_unreadable(metadata: dict[str, Any], failed: list[tuple[str, str]]) -> None:
    """Remember files that could not be read (so that --append does not retry them)."""
    if failed:
        rec = dict(metadata.get("unreadable") or {})
        for path, reason in failed:
            st = _stat(path)
            if st is not None:
                rec[path] = [*st, reason]
        metadata["unreadable"] = rec


def _fit_on(args: argparse.Namespace, probe: Any, existing: Any) -> list[str] | None:
    """The images of ``--fit-on`` (None when not given, or when an interrupted run whose
    state is fitted already is resumed); ``CLIError`` when there is nothing to fit (an
    existing index's state, or settings without learned state)."""
    if not getattr(args, "fit_on", None):
        return None
    if existing is not None:
        if existing.metadata.get("complete") is False:
            return None  # the interrupted run fitted the state before its first chunk
        raise CLIError("--fit-on: the index's learned state was fitted when it was built; "
                       "build a new index to fit it on other images")
    if probe.fitted:
        raise CLIError(f"--fit-on: signature {probe.name} has no learned state to fit with "
                       "these settings")
    if probe.state_flags and getattr(args, probe.state_flags[1], None) is not None:
        raise CLIError(f"give --fit-on or --{probe.state_flags[1].replace('_', '-')}, "
                       "not both")
    paths = discover(args.fit_on)
    if not paths:
        raise CLIError(f"--fit-on: no images under {' '.join(args.fit_on)}")
    log(args, f"fitting set: {plural(len(paths), 'image')} under {' '.join(args.fit_on)}")
    return paths


def run(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None) is not None:
        if getattr(args, "fit_on", None):
            raise CLIError("--fit-on does not apply with --ray")
        if args.engine is not None:
            raise CLIError("--engine does not apply with --ray (each shard uses engine auto)")
        from ..distributed.cli import run as run_ray

        return run_ray(args)
    from .. import __version__
    from ..index import load_index
    from ..pipeline import build_index
    from ..signatures import DEFAULT_SIGNATURE, get_signature

    out = Path(args.output)
    if out.is_dir():
        raise CLIError(f"-o must name an index file, got the folder {out}")
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: folder {out.parent} does not exist")
    existing = None
    if out.exists() and not args.overwrite:
        existing = load_index(out, mmap=False)
        if existing.metadata.get("complete") is False:
            log(args, f"{out}: resuming an interrupted run ({len(existing)} images indexed)")
        elif not args.append:
            raise CLIError(
                f"{out} exists; pass --append to add new images to it or --overwrite to replace it"
            )
    name = args.signature or (existing.signature.name if existing is not None
                              else DEFAULT_SIGNATURE)
    if existing is not None and name != existing.signature.name:
        raise CLIError(f"--signature {name} differs from the index's "
                       f"{existing.signature.name}; build a new index for another signature")
    cls = get_signature(name)
    check_foreign_options(args, cls)
    if existing is not None and existing.metadata.get("complete") is not False:
        _fit_on(args, existing.signature, existing)  # refused before anything else
    t0 = time.perf_counter()
    paths = discover(args.folders)
    if not paths:
        raise CLIError(f"no images found under {' '.join(args.folders)}")
    if existing is not None:
        md = existing.metadata
        have = existing.signature
        want = signature_params(args, cls, several=False)[0]
        for f in given_fields(args, cls):
            if getattr(want, f.name) != getattr(have.params, f.name):
                raise CLIError(f"{flag_of(f)} {getattr(want, f.name)} differs from the index's "
                               f"{f.name} {getattr(have.params, f.name)}; build a new index "
                               "for other settings")
        model = args.model or (index_model(argparse.Namespace(model=None, index=str(out)),
                                           existing) if md.get("model") else DEFAULT_MODEL)
        if args.model and md.get("model") and args.model != md.get("model"):
            raise CLIError(
                f"--model {args.model} differs from the index's model {md.get('model')}; "
                "codes of different models cannot be mixed")
        ignore_index = md.get("ignore_index") if args.ignore_index is None else args.ignore_index
        if ignore_index != md.get("ignore_index"):
            raise CLIError(f"--ignore-index {args.ignore_index} differs from the index's "
                           f"{md.get('ignore_index')}")
        known = set(existing.keys()) if existing.has_keys else set()
        bad = _known_unreadable(md, paths) if not args.retry_unreadable else set()
        if bad:
            log(args, f"{len(bad)} files that could not be read before and have not changed "
                "are skipped (--retry-unreadable tries them again)")
            paths = [p for p in paths if p not in bad]
        n_new = sum(p not in known for p in paths)
        log(args, f"{len(paths)} images found, {len(paths) - n_new} already in {out}")
        if not n_new:
            log(args, "nothing new to add")
            set_engine(existing, args.engine)
            if existing.metadata.pop("complete", True) is False or args.engine is not None:
                existing.save(out)
            print(f"{out}: {len(existing)} images (unchanged)")
            return 0
        sig = have
    else:
        model = args.model or DEFAULT_MODEL
        ignore_index = args.ignore_index
        log(args, f"{len(paths)} images found")
        sig = None
    model = model_spec(model)
    try:
        probe = sig or cls(signature_params(args, cls, several=False)[0], num_classes=1)
        probe.check_available()
    except ImportError as exc:
        raise CLIError(f"--signature {name} needs OpenCV ({exc})") from None
    fit_on = _fit_on(args, probe, existing)
    if args.engine is not None and existing is None:
        try:  # --engine of an index without engines is refused before the slow steps
            check_engine(args.engine, probe.new_index())
        except ValueError:
            pass  # a signature not fitted yet: checked on the built index
    check_engine(args.engine, existing)
    if sig is None and cls.state_flags and getattr(args, cls.state_flags[0], None):
        _new_signature(args, name, 1, None)  # read the state file before the slow steps
    # a signature that reads only the image files (cnn, neural-codes) needs no segmenter
    seg = load_model(args, model) if "labels" in probe.requires else None
    if seg is not None and ignore_index is not None \
            and not 0 <= ignore_index < seg.num_classes:
        raise CLIError(
            f"--ignore-index must be a class id in [0, {seg.num_classes}), got {ignore_index}")
    if existing is not None:
        if seg is not None and seg.num_classes != sig.num_classes:
            raise CLIError(f"model {model} has {seg.num_classes} classes, the index "
                           f"{sig.num_classes}")
        existing.metadata["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        existing.metadata["library_version"] = __version__
        metadata = None
    else:
        sig = _new_signature(args, name, seg.num_classes if seg is not None else 1,
                             ignore_index)
        metadata = {
            "signature": name,
            "ignore_index": ignore_index,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "library_version": __version__,
        }
        if seg is not None:
            metadata.update({
                "model": model,
                "model_name": seg.meta.name,
                "num_classes": seg.num_classes,
                "class_names": list(seg.class_names),
                "device": str(seg.device),
                "runtime": seg.runtime,
            })
        if cls.state_flags:
            file_flag, root_flag = cls.state_flags
            state = getattr(args, file_flag, None)
            root = getattr(args, root_flag, None)
            metadata[f"{cls.state_name}_set"] = (
                str(Path(state).resolve()) if state else
                str(Path(root).resolve()) if root else "the indexed images")
    fit = None if sig.fitted else state_training_paths(args, cls)
    if fit_on is not None:
        fit = fit_on
        if metadata is not None:
            metadata[f"{cls.state_name}_set"] = " ".join(
                str(Path(f).resolve()) for f in args.fit_on)
    def checkpoint(index: Any) -> None:  # an interrupted run keeps what it finished
        index.metadata["complete"] = False
        set_engine(index, args.engine)
        index.save(out)
        log(args, f"{out}: {len(index)} images saved so far")

    try:
        res = build_index(paths, sig, segmenter=seg, append_to=existing, fit_paths=fit,
                          metadata=metadata, batch_size=args.batch_size,
                          progress=not args.quiet, threads=args.threads, checkpoint=checkpoint,
                          chunk_size=args.checkpoint_every, use_cache=not args.no_cache,
                          log=None if args.quiet else (lambda m: log(args, m)))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    report_failed(res.failed)
    if res.index is not None:
        _record_unreadable(res.index.metadata, res.failed)
    if res.index is None:
        raise CLIError(f"none of the {len(paths)} images could be read; no index written")
    index = res.index
    set_engine(index, args.engine)
    if res.added and index.has_keys:  # where the images are (semcbir search --root re-roots)
        from ..pipeline import image_root

        index.metadata["image_root"] = image_root(index.keys())
    if index.metadata.pop("complete", True) is False or res.added or res.failed \
            or args.engine is not None:
        prepare = getattr(index, "prepare", None)
        if prepare is not None and res.added:
            # what searches derive from the database (a fused index's re-ranking graph, its
            # O(N^2) distances) is built once here and saved, not again by every search
            prepare(threads=args.threads)
        index.save(out)
    if existing is not None and not res.added:
        print(f"{out}: {len(existing)} images (unchanged; {len(res.failed)} skipped)")
        return 0
    dt = time.perf_counter() - t0
    counts = f"{plural(len(index), 'image')} ({len(res.added)} added, {len(res.failed)} skipped)"
    cached = f", {res.cached} label maps from the cache" if res.cached else ""
    print(f"{out}: {counts} [{index.describe()}] in {dt:.1f} s{cached}")
    return 0
