"""``semcbir train-hash DATASET -o CKPT``: train paper 002's deep hashing network (or its
no-segmentation baseline) on the training part of a data set; ``--evaluate`` scores it
against the baselines on the held-out part over several seeds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._common import DEFAULT_MODEL, CLIError, add_model_options, log, positive_int

HELP = "train paper 002's segmentation-aware deep hashing network (semcbir index " \
    "--signature deephash --hash-model CKPT uses it)"


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train-hash", help=HELP,
        description="Train paper 002's network (PSP segmentation branch + hash head on a "
        "frozen EfficientNet-Lite0, codes sgn(r - 0.5)) on the training part of DATASET: a "
        "segmentation phase against the masks (ground truth where the data set has it, else "
        "the label maps of --model), then hash learning against the image classes (the "
        "data set's categories). Checkpoints are written atomically after every epoch; "
        "--resume continues an interrupted run.")
    p.add_argument("dataset", choices=["corel1k", "msrc", "folders"],
                   help="data set layout (classes from its categories)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="data set folder (default $SEMCBIR_DATA/<dataset>)")
    p.add_argument("-o", "--output", metavar="CKPT",
                   help="checkpoint to write (required unless --evaluate)")
    p.add_argument("--resume", action="store_true",
                   help="continue from CKPT when it exists (same options and data)")
    p.add_argument("--export-torchscript", metavar="PATH", default=None,
                   help="also write the whole network (backbone included) as TorchScript")
    g = p.add_argument_group("network")
    g.add_argument("--no-segmentation", action="store_true",
                   help="the baseline (Lin et al. 2015): no PSP branch, no masks")
    g.add_argument("--bits", type=positive_int, default=48,
                   help="bits per code, a multiple of 8 (48, the paper's)")
    g.add_argument("--fc", type=positive_int, nargs=2, default=[4096, 4096], metavar="N",
                   help="the two fully connected layers (4096 4096, the paper's)")
    g.add_argument("--psp-input", choices=["stage3+stage5", "stage3"], default="stage3+stage5",
                   help="backbone map(s) of the PSP branch (default stage3+stage5)")
    g.add_argument("--seg-channels", type=positive_int, default=128,
                   help="channels of the segmentation head's 3x3 convolution (128)")
    g.add_argument("--seg-grid", type=positive_int, default=2,
                   help="cells per side of the pooled class maps the hash head reads (2)")
    g.add_argument("--dropout", type=float, default=0.5, help="after each FC layer (0.5)")
    g.add_argument("--finetune", type=int, choices=[0, 1, 2], default=0,
                   help="backbone stages trained too, from the end (0 = frozen backbone, "
                   "maps cached once; 1 = head conv + stage 7; 2 = + stage 6)")
    g.add_argument("--masks", choices=["auto", "gt", "model"], default="auto",
                   help="segmentation masks: ground truth (gt), the label maps of --model "
                   "(model), or gt when the data set has it (auto)")
    g.add_argument("--seg-classes", choices=["compact", "keep"], default="compact",
                   help="mask classes: those present in the training masks (compact) or all")
    t = p.add_argument_group("training")
    t.add_argument("--seg-epochs", type=int, default=30, help="segmentation phase (30)")
    t.add_argument("--hash-epochs", type=int, default=30, help="hash learning phase (30)")
    t.add_argument("--seg-batch", type=positive_int, default=32, help="(32)")
    t.add_argument("--hash-batch", type=positive_int, default=96, help="(96)")
    t.add_argument("--lr", type=_positive_float, default=1e-3,
                   help="SGD learning rate, x0.1 after 2/3 of each phase (1e-3)")
    t.add_argument("--seg-size", type=positive_int, default=56,
                   help="side of the masks the segmentation loss compares with (56)")
    t.add_argument("--tune-psp", action="store_true",
                   help="train the PSP branch during hash learning too (default: frozen)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights, batches, dropout")
    t.add_argument("--train-fraction", type=_fraction, default=0.5,
                   help="part of each category trained on (0.5; the rest is held out for "
                   "--evaluate and never trained on; 1 = every image)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--evaluate", action="store_true",
                   help="train proposed and baseline per --seeds and score them, ITQ, "
                   "PCA-sign and SBS on the held-out part (MAP@10, MAP@50, MAP); "
                   "writes no checkpoint")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON")
    add_model_options(p, model_default=DEFAULT_MODEL)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run, _parser=p)


def _masks(args: argparse.Namespace, ds: Any) -> tuple[list[Any], int, int | None, Any, str]:
    """``(masks, number of mask values, void value, class names, source)``."""
    use_gt = args.masks == "gt" or (args.masks == "auto" and ds.has_ground_truth)
    if use_gt:
        if not ds.has_ground_truth:
            raise CLIError(f"--masks gt: data set {ds.name} has no ground-truth label maps")
        maps = [ds.read_label_map(i) for i in range(len(ds))]
        names = ds.label_classes
        nvals = len(names) if names else int(max(int(m.max()) for m in maps)) + 1
        return maps, nvals, ds.ignore_index, names, "ground truth"
    from ..eval.cache import segment_cached

    maps, info = segment_cached([str(p) for p in ds.images], model=args.model,
                                device=args.device, dtype=args.dtype, runtime=args.runtime,
                                batch_size=args.batch_size, progress=not args.quiet,
                                use_cache=not args.no_cache,
                                log=None if args.quiet else (lambda m: log(args, m)))
    return maps, int(info["num_classes"]), None, info["class_names"], \
        f"label maps of {info['model_name']}"


def run(args: argparse.Namespace) -> int:
    from ..eval.datasets import load_dataset
    from ..hashing.experiment import hashing_experiment, split_train_test
    from ..hashing.train import TrainConfig, train_hashnet

    if not args.evaluate and not args.output:
        raise CLIError("give -o CKPT (the checkpoint to write), or --evaluate")
    if args.output:
        out = Path(args.output)
        if out.is_dir():
            raise CLIError(f"-o must name a checkpoint file, got the folder {out}")
        if not out.parent.is_dir():
            raise CLIError(f"cannot write {out}: folder {out.parent} does not exist")
        if out.exists() and not args.resume and not args.evaluate:
            raise CLIError(f"{out} exists; pass --resume to continue it or remove it")
    if args.bits % 8:
        raise CLIError(f"--bits must be a multiple of 8, got {args.bits}")
    try:
        ds = load_dataset(args.dataset, args.root)
        tc = TrainConfig(seg_epochs=args.seg_epochs, hash_epochs=args.hash_epochs,
                         seg_batch=args.seg_batch, hash_batch=args.hash_batch, lr=args.lr,
                         seg_size=args.seg_size, tune_psp=args.tune_psp, seed=args.seed)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    net = {"psp_input": args.psp_input, "seg_channels": args.seg_channels,
           "seg_grid": args.seg_grid, "dropout": args.dropout, "finetune": args.finetune}
    say = None if args.quiet else (lambda m: log(args, m))
    need_masks = args.evaluate or not args.no_segmentation
    masks, nvals, void, names, source = _masks(args, ds) if need_masks else \
        (None, 0, None, None, "")
    if need_masks:
        log(args, f"masks: {source} ({nvals} values)")
    if args.evaluate:
        if args.train_fraction >= 1:
            raise CLIError("--evaluate needs held-out images: --train-fraction below 1")
        res = hashing_experiment(ds, masks, mask_values=nvals, mask_ignore_index=void,
                                 seeds=args.seeds, bits=args.bits, fc=tuple(args.fc),
                                 train=tc, train_fraction=args.train_fraction,
                                 progress=not args.quiet, log=say, **net)
        res["masks"] = source
        _print_eval(res)
        if args.json:
            from .._atomic import atomic_path

            with atomic_path(args.json) as tmp:
                Path(tmp).write_text(json.dumps(res, indent=1))
        return 0
    if args.train_fraction >= 1:
        rows = list(range(len(ds)))
    else:
        rows = split_train_test(ds.categories, args.train_fraction)[0].tolist()
    log(args, f"{ds.name}: training on {len(rows)} of {len(ds)} images "
        f"({len(set(ds.categories[rows].tolist()))} classes)")
    try:
        res = train_hashnet(
            [str(ds.images[i]) for i in rows], ds.categories[rows],
            None if args.no_segmentation else [masks[i] for i in rows],  # type: ignore[index]
            use_segmentation=not args.no_segmentation, bits=args.bits, fc=tuple(args.fc),
            train=tc, seg_classes=args.seg_classes, num_mask_values=nvals or None,
            mask_ignore_index=void, mask_class_names=names,
            class_names=[ds.category_name(c) for c in range(int(ds.categories.max()) + 1)],
            checkpoint=args.output, resume=args.resume, device=args.device,
            progress=not args.quiet, log=say, **net)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    res.model.save(args.output)
    if args.export_torchscript:
        res.model.export_torchscript(args.export_torchscript)
        log(args, f"TorchScript: {args.export_torchscript}")
    h = [r for r in res.history if r["phase"] == "hash"]
    last = f", final class loss {h[-1]['loss']:.4f}" if h else ""
    print(f"{args.output}: {res.model}{last}")
    return 0


def _print_eval(res: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"{res['dataset']}: {res['train']} training images (database), {res['test']} "
          f"queries; masks: {res.get('masks')}; seeds {res['seeds']}", file=out)
    print(f"{'method':<24} {'MAP@10':>14} {'MAP@50':>14} {'MAP':>14}", file=out)
    for name, s in res["summary"].items():
        cells = [f"{100 * s[k]['mean']:6.2f} ± {100 * s[k]['std']:4.2f}"
                 for k in ("map@10", "map@50", "map")]
        print(f"{name:<24} " + " ".join(f"{c:>14}" for c in cells), file=out)
    d = res["delta_points"]
    print("proposed - baseline (points): " + ", ".join(
        f"{k} {d[k]['mean']:+.2f} ± {d[k]['std']:.2f}" for k in ("map@10", "map@50", "map")),
        file=out)
