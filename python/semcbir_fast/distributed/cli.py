"""``semcbir index FOLDER|URI... -o SHARDS --ray [ADDRESS]``: the distributed build.

``cli/index.py`` registers these options (:func:`add_arguments`) and hands over to
:func:`run` when ``--ray`` is given; ``-o`` then names the sharded index's folder (shards +
``manifest.json``). A rerun of the same command completes an interrupted build.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ray`` option group of ``semcbir index``."""
    g = parser.add_argument_group("distributed build (Ray; pip install 'semcbir_fast[ray]')")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="build a sharded index on a Ray cluster: ADDRESS of a running "
                   "cluster ('auto', 'ray://head:10001'), or none to start a local one; "
                   "-o is then the output folder (shards + manifest.json), which every node "
                   "must see at the same path; FOLDERs may be URIs (s3://, gs://, file://)")
    g.add_argument("--shard-size", type=int, default=4096, metavar="N",
                   help="--ray: images per shard, the unit of work and of resumption (4096)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="--ray: actors building shards (default: one per GPU, else one per "
                   "--cpus-per-worker CPUs)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="--ray: GPUs per actor (default 1 when the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1, metavar="C",
                   help="--ray: CPUs per actor (1)")


def run(args: argparse.Namespace) -> int:
    """Run the distributed build for ``semcbir index --ray`` (``args`` of ``cli/index.py``)."""
    import logging
    from pathlib import Path

    from ..cli._common import (
        DEFAULT_MODEL,
        CLIError,
        check_foreign_options,
        load_model,
        log,
        model_spec,
        plural,
        report_failed,
        signature_params,
    )
    from ..signatures import DEFAULT_SIGNATURE, get_signature

    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise CLIError(f"--ray needs Ray ({exc}); install it with "
                       "pip install 'semcbir_fast[ray]'") from None
    from .build import SegmenterSpec, build_sharded

    if getattr(args, "append", False):
        raise CLIError("--ray builds or completes a sharded index; --append does not apply "
                       "(rerun the same command to complete an interrupted build)")
    out = Path(args.output)
    if out.is_file():
        raise CLIError(f"--ray: -o must name a folder for the shards, got the file {out}")
    if args.overwrite and out.is_dir():
        for f in list(out.glob("shard-*.idx")) + list(out.glob("manifest.json")):
            f.unlink()
    name = args.signature or DEFAULT_SIGNATURE
    cls = get_signature(name)
    check_foreign_options(args, cls)
    model = model_spec(args.model or DEFAULT_MODEL)
    seg = load_model(args, model)  # on the driver: classes, names, fitting
    if args.ignore_index is not None and not 0 <= args.ignore_index < seg.num_classes:
        raise CLIError(f"--ignore-index must be a class id in [0, {seg.num_classes}), got "
                       f"{args.ignore_index}")
    (params,) = signature_params(args, cls, several=False)
    sig = cls(params, num_classes=seg.num_classes, ignore_index=args.ignore_index)
    if cls.state_flags:
        path = getattr(args, cls.state_flags[0], None)
        if path is not None:
            sig.load_state(path)
    metadata = {"model": model, "model_name": seg.meta.name, "num_classes": seg.num_classes,
                "class_names": list(seg.class_names), "signature": name,
                "ignore_index": args.ignore_index,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    spec = SegmenterSpec(model, device=args.device, dtype=args.dtype,
                         runtime=getattr(args, "runtime", None))
    if args.quiet:
        logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        rep = build_sharded(
            args.folders, sig, out, segmenter=spec, shard_size=args.shard_size,
            workers=args.workers, num_gpus=args.gpus_per_worker,
            num_cpus=args.cpus_per_worker, batch_size=args.batch_size,
            use_cache=not args.no_cache, metadata=metadata,
            address=None if args.ray == "local" else args.ray, progress=not args.quiet,
            log=None if args.quiet else (lambda m: log(args, m)))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    report_failed(rep.failed)
    m = rep.manifest
    print(f"{m.path}: {plural(m.count, 'image')} in {plural(len(m.shards), 'shard')} "
          f"({len(rep.built)} built, {len(rep.skipped)} complete before, "
          f"{len(rep.failed)} skipped) [{sig.describe()}] in {rep.seconds:.1f} s"
          + (f", {rep.images_per_second:.1f} images/s" if rep.images_built else ""))
    return 0
