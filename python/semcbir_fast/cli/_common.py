"""What every command shares: the user-error type, logging, option groups (segmentation
model; every registered signature's options, built from its ``Params`` field metadata),
model loading, image discovery and the index opener."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import shlex
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..segment.registry import DEFAULT_SEGMENTER

__all__ = [
    "DEFAULT_MODEL",
    "CLIError",
    "add_model_options",
    "add_signature_options",
    "discover",
    "err",
    "load_model",
    "log",
    "open_index",
    "positive_int",
    "printable",
    "signature_params",
]

#: the model of ``--model`` when none is given: the library's default segmenter, the ADE20K
#: + Pascal VOC composite "ade20k+voc" (docs/composite.md; --model ade20k-mnv2 is the
#: ADE20K model alone). Imported from the registry, which imports neither torch nor OpenCV.
DEFAULT_MODEL = DEFAULT_SEGMENTER


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def log(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        err(msg)


def int_in(lo: int, hi: int | None, what: str) -> Any:
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


positive_int = int_in(1, None, "a positive integer")


def add_model_options(p: argparse.ArgumentParser, *, model_default: str | None) -> None:
    g = p.add_argument_group("segmentation model")
    g.add_argument("--model", default=model_default, metavar="NAME|PATH",
                   help=f"registered model name, or a model file (TorchScript .pt, TFLite, ONNX) "
                   f"with its .json sidecar "
                   f"(default: {model_default or 'the one recorded in the index'})")
    g.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="model compute type of the torch runtime (default float32; float16 "
                   "needs CUDA)")
    g.add_argument("--runtime", default=None, choices=["auto", "torch", "litert", "onnxruntime"],
                   help="what runs the model (default auto: on the CPU the int8 LiteRT model "
                   "when installed, 2-5x faster than the float torch port at the same MAP; "
                   "torch on CUDA or with --dtype)")
    g.add_argument("--batch-size", type=positive_int, default=16,
                   help="images per model call (16)")
    g.add_argument("--no-cache", action="store_true",
                   help="segment (and describe) again instead of reusing the per-image cache "
                   "of label maps and features (SEMCBIR_CACHE, default ~/.cache/semcbir_fast)")


# ----------------------------------------------------------------------------- signatures
def _fields(cls: Any) -> list[Any]:
    return [f for f in dataclasses.fields(cls.Params) if f.metadata.get("cli")]


def _flag(f: Any) -> str:
    return f.metadata["cli"]["flag"] or "--" + f.name.replace("_", "-")


def _flags_of(f: Any) -> list[str]:
    meta = f.metadata["cli"]
    return [fl for fl, _ in meta["flags"]] if meta["flags"] else [_flag(f)]


def add_signature_options(p: argparse.ArgumentParser, *, several: bool,
                          state_file: bool) -> None:
    """``--signature`` and every registered signature's options, one group per signature
    (a flag shared by several is added once, in the first group). ``several``: sweep
    options take lists (``semcbir eval``)."""
    from ..signatures import get_signature, list_signatures

    names = list_signatures()
    seen: set[str] = set()
    for name in names:
        cls = get_signature(name)
        g = p.add_argument_group(f"{name} signature", (cls.__doc__ or "").strip().split("\n")[0])
        for f in _fields(cls):
            meta = f.metadata["cli"]
            if meta["flags"]:
                for fl, kw in meta["flags"]:
                    if fl not in seen:
                        seen.add(fl)
                        g.add_argument(fl, **kw)
                continue
            fl = _flag(f)
            if fl in seen:
                continue
            seen.add(fl)
            kw = dict(meta["argparse"])
            default = f.default
            helptext = meta["help"]
            if several and meta["sweep"]:
                kw["nargs"] = "+"
                default = list(meta["eval_default"] or [default])
                helptext += "; several values give one column each"
            elif meta["sweep"] and meta["eval_default"] is not None:
                default = None  # "not given": the signature's default (or the index's)
            if kw.get("action") in ("store_true", argparse.BooleanOptionalAction) \
                    or kw.get("action") is argparse.BooleanOptionalAction:
                pass
            g.add_argument(fl, dest=f.name, default=default, help=helptext, **kw)
        if cls.state_flags and cls.state_flags[1] not in seen:
            file_flag, root_flag = cls.state_flags
            seen.add(root_flag)
            g.add_argument("--" + root_flag.replace("_", "-"), dest=root_flag, default=None,
                           metavar="DIR",
                           help=f"{name}: fit its learned state on the images under DIR "
                           "(recursively) instead of the indexed / evaluated images themselves "
                           "(the default; paper 000 fits on another data set)")
            if state_file:
                g.add_argument("--" + file_flag.replace("_", "-"), dest=file_flag, default=None,
                               metavar="FILE",
                               help=f"{name}: a saved state (e.g. Vocabulary.save, .npz) "
                               "instead of fitting one")


def flag_of(f: Any) -> str:
    """The (first) command-line flag of a Params field."""
    return _flags_of(f)[0]


def given_fields(args: argparse.Namespace, cls: Any) -> list[Any]:
    """The Params fields of ``cls`` whose options differ from the parser's defaults."""
    parser = args._parser
    out = []
    for f in _fields(cls):
        meta = f.metadata["cli"]
        dests = ([fl.lstrip("-").replace("-", "_") for fl, _ in meta["flags"]]
                 if meta["flags"] else [f.name])
        if any(getattr(args, d, None) != parser.get_default(d) for d in dests):
            out.append(f)
    return out


def check_foreign_options(args: argparse.Namespace, cls: Any) -> None:
    """``CLIError`` when options of another signature than ``cls`` (a class, or a list of
    the classes evaluated together) were given (the parser's defaults are on
    ``args._parser``)."""
    from ..signatures import get_signature, list_signatures

    classes = list(cls) if isinstance(cls, (list, tuple)) else [cls]
    own = {fl for c in classes for f in _fields(c) for fl in _flags_of(f)}
    given: list[str] = []  # flags of other signatures that were given, in a stable order
    owners: dict[str, list[str]] = {}  # flag -> the signatures that have it
    for name in list_signatures():
        other = get_signature(name)
        for f in _fields(other):
            for fl in _flags_of(f):
                owners.setdefault(fl, []).append(name)
        if other in classes:
            continue
        given += [fl for f in given_fields(args, other) for fl in _flags_of(f)
                  if fl not in own and fl not in given]
    groups: dict[tuple[str, ...], list[str]] = {}  # the same owners: one clause
    for fl in given:
        groups.setdefault(tuple(sorted(owners[fl])), []).append(fl)
    if groups:
        raise CLIError("; ".join(
            f"{' / '.join(fls)} appl{'ies' if len(fls) == 1 else 'y'} to --signature "
            f"{' / '.join(where)} only" for where, fls in groups.items()))


def signature_params(args: argparse.Namespace, cls: Any, *, several: bool) -> list[Any]:
    """The ``Params`` the options ask for: one, or (``several``) one per combination of the
    swept options' values. Invalid values raise ``CLIError`` naming the option."""
    base: dict[str, Any] = {}
    sweeps: dict[str, list[Any]] = {}
    for f in _fields(cls):
        meta = f.metadata["cli"]
        v = meta["from_args"](args) if meta["from_args"] else getattr(args, f.name, f.default)
        if v is None and meta["sweep"] and not several:
            v = f.default
        if several and meta["sweep"]:
            sweeps[f.name] = list(v)
        else:
            base[f.name] = v
    out = []
    for combo in itertools.product(*sweeps.values()):
        try:
            out.append(cls.Params(**base, **dict(zip(sweeps, combo))))
        except ValueError as exc:
            bad = next((" / ".join(_flags_of(f)) for f in _fields(cls) if f.name in str(exc)),
                       None)
            raise CLIError(f"{bad + ': ' if bad else ''}{exc}") from None
    return out


# ----------------------------------------------------------------------------- images, models
def discover(inputs: Sequence[str]) -> list[str]:
    """Image files under the folders / files given, as keys, without duplicates."""
    from ..eval.datasets import IMAGE_EXTENSIONS, find_images
    from ..pipeline import image_key

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
            k = image_key(f)
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def state_training_paths(args: argparse.Namespace, cls: Any) -> list[str] | None:
    """Images under the ``--<state>-root`` folder of a signature with learned state (None
    when the option is not given: fit on the indexed / evaluated images)."""
    if not cls.state_flags:
        return None
    root_flag = cls.state_flags[1]
    root = getattr(args, root_flag, None)
    if root is None:
        return None
    from ..eval.datasets import find_images

    flag = "--" + root_flag.replace("_", "-")
    try:
        paths = [str(p) for p in find_images(root)]
    except (FileNotFoundError, NotADirectoryError):
        raise CLIError(f"{flag}: no such folder: {root}") from None
    if not paths:
        raise CLIError(f"{flag}: no images under {root}")
    log(args, f"{cls.state_name} set: {len(paths)} images under {root}")
    return paths


def model_spec(model: str) -> str:
    """A model name, or an absolute path when it names a file."""
    if model != DEFAULT_MODEL and Path(model).is_file():
        return os.path.abspath(model)
    return model


def load_model(args: argparse.Namespace, model: str) -> Any:
    """The segmenter ``model`` (cached on ``args`` for the command's lifetime)."""
    try:
        from ..segment import load_segmenter
    except ImportError as exc:  # torch / OpenCV missing
        raise CLIError(
            f"segmentation needs the 'segment' extra ({exc}); install it with "
            "pip install 'semcbir_fast[segment]'"
        ) from None
    cached = getattr(args, "_segmenter", None)
    if cached is not None and cached[0] == model:
        return cached[1]
    log(args, f"loading model {model} ...")
    try:
        seg = load_segmenter(model, device=args.device, dtype=args.dtype,
                             runtime=getattr(args, "runtime", None))
    except (ValueError, RuntimeError) as exc:
        raise CLIError(cli_wording(str(exc))) from None
    args._segmenter = (model, seg)
    return seg


def index_model(args: argparse.Namespace, index: Any) -> str:
    """The segmentation model for the queries of ``index``: ``--model`` when given, else the
    one the index records, but only when that is a registered name
    (:func:`semcbir_fast.segment.available_segmenters`). A model *file* named by an index is
    never loaded on the index's word: loading TorchScript runs its code, and an index file
    could name any file on the machine; the user passes ``--model PATH`` to choose it."""
    if args.model:
        return str(args.model)
    recorded = index.metadata.get("model")
    if not recorded:
        raise CLIError(f"{args.index} does not record its model; pass --model NAME|PATH")
    from ..segment.registry import available_segmenters

    if isinstance(recorded, str) and recorded in available_segmenters():
        return recorded
    raise CLIError(
        f"{args.index} records the model {printable(recorded)}, which is not a registered "
        f"model name ({', '.join(available_segmenters())}); a model file named by an index is "
        "not loaded on the index's word (loading it would run its code): pass --model "
        f"{printable(shlex.quote(str(recorded)))} if you trust that file")


#: Bidirectional-text controls, which reorder what a terminal shows.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: Any) -> str:
    """``text`` made safe for a terminal: control characters (C0, DEL, C1: escape sequences
    that move the cursor, recolour, retitle or "click" the terminal), line / paragraph
    separators, lone surrogates and bidirectional overrides are shown as Python escapes
    (``\\x1b``, ``\\u202e``); everything else, non-ASCII letters included, is kept."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") else ch
        for ch in s)


def open_index(path: str, *, verify: bool = True, engine: str | None = None) -> Any:
    from ..index import load_index

    index = load_index(path, verify=verify)
    if engine is not None:
        set_engine(index, engine)
    return index


def add_engine_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--engine auto|dense|sparse``: how an SBS index stores and searches its codes."""
    from ..index.sbs import ENGINES

    p.add_argument("--engine", default=None, choices=ENGINES,
                   help=f"SBS indexes: {what} the dense codes or only their present cells "
                   "(docs/sparse_search.md); auto: sparse when the codes are sparse; the "
                   "results are the same")


def check_engine(engine: str | None, index: Any) -> None:
    """CLIError when ``--engine`` is given for an index (not None) that has no engines."""
    if engine is not None and index is not None and not hasattr(index, "set_engine"):
        raise CLIError(f"--engine applies to SBS indexes, not to {type(index).__name__}")


def set_engine(index: Any, engine: str | None) -> None:
    """Switch an index to ``--engine`` (nothing when not given)."""
    check_engine(engine, index)
    if engine is not None:
        try:
            index.set_engine(engine)
        except ValueError as exc:
            raise CLIError(str(exc)) from None


def add_root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, metavar="DIR",
                   help="the folder the indexed images are in now, when they moved since "
                   "indexing (paths under the index's image root are re-rooted there)")


def plural(n: int, word: str) -> str:
    """``"1 query"``, ``"2 queries"``, ``"3 images"``."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" \
        else f"{n} {word}s"


_API_WORDS = (
    (re.compile(r"\bdevice='([^']*)'"), r"--device \1"),
    (re.compile(r"\bdtype=torch\.(\w+)"), r"--dtype \1"),
    (re.compile(r"\bdtype=None \(float32\)"), "--dtype float32"),
    (re.compile(r"\bruntime='([^']*)'"), r"--runtime \1"),
    (re.compile(r"\bmodel='([^']*)'"), r"--model \1"),
)


def cli_wording(msg: str) -> str:
    """A library message in the command line's words: ``device='cpu'`` -> ``--device cpu``,
    ``dtype=torch.bfloat16`` -> ``--dtype bfloat16``, ``runtime='torch'`` -> ``--runtime
    torch``, ``model='ade20k-mnv2'`` -> ``--model ade20k-mnv2``."""
    for pat, rep in _API_WORDS:
        msg = pat.sub(rep, msg)
    return msg


def check_image_files(images: Sequence[str]) -> None:
    """``CLIError`` for a query that is missing or not a decodable image, before any model
    is loaded (reads only the file's header)."""
    for img in images:
        if not Path(img).is_file():
            raise CLIError(f"no such image file: {img}")
    try:
        import cv2
    except ImportError:  # the segmentation step says what is missing
        return
    for img in images:
        try:
            known = cv2.haveImageReader(os.fspath(img))
        except (cv2.error, UnicodeError):  # some builds refuse non-ASCII names: decode later
            continue
        if not known:
            raise CLIError(f"cannot read query image {printable(img)}: not an image format "
                           "OpenCV decodes (JPEG, PNG, TIFF, WebP, BMP, ...)")


def warn_moved(args: argparse.Namespace, index: Any, res: Any) -> None:
    """One warning when result images are not where the index says (a moved folder)."""
    keys = {k for row in res.keys for k in row if k}
    missing = sorted(k for k in keys if not os.path.exists(k))
    if not missing:
        return
    from ..pipeline import image_root

    try:
        root = index.metadata.get("image_root") or image_root(index.keys())
    except ValueError:
        root = "?"
    hint = ("check --root" if getattr(args, "root", None) else
            f"if the images moved, pass --root NEWDIR (they were indexed under {printable(root)})")
    err(f"warning: {plural(len(missing), 'result image')} of {len(keys)} not found, e.g. "
        f"{printable(missing[0])}; {hint}")


def retriever(args: argparse.Namespace, index: Any) -> Any:
    """A Retriever that loads (and checks) the index's model only if a query needs it."""
    from ..pipeline import Retriever

    def segmenter() -> Any:
        seg = load_model(args, index_model(args, index))
        classes = index.signature.num_classes
        if seg.num_classes != classes and index.metadata.get("num_classes") is None:
            raise CLIError(f"model {seg.meta.name} has {seg.num_classes} classes but the "
                           f"index has {classes}; pass the index's --model")
        return seg

    return Retriever(index, segmenter, batch_size=args.batch_size,
                     threads=getattr(args, "threads", 0), use_cache=not args.no_cache,
                     root=getattr(args, "root", None))


def query(args: argparse.Namespace, index: Any, images: Sequence[str], k: int, *,
          labels: bool = False) -> Any:
    """Search ``index`` for image files (``CLIError`` for a missing one)."""
    from ..pipeline import image_key

    for img in images:
        if not Path(img).is_file():
            raise CLIError(f"no such image file: {img}")
    r = retriever(args, index)
    known: set[str | None] = set()
    if index.has_keys and len(index) and not args.resegment and not labels:
        # looked up, never decoded (index.keys() is a method of the index, not dict.keys)
        known = {r.locate(key) for key in index.keys()}  # noqa: SIM118
    check_image_files([img for img in images if image_key(img) not in known])
    try:
        res = r.query(images, k, resegment=args.resegment, keep_labels=labels)
    except ValueError as exc:
        raise CLIError(cli_wording(str(exc))) from None
    warn_moved(args, index, res)
    return res


def report_failed(failed: Sequence[tuple[str, str]],
                  what: str = "unreadable file", verb: str = "skipped") -> None:
    if failed:
        err(f"{plural(len(failed), what)} {verb}:")
        for src, reason in failed:
            err(f"  {src}: {reason}")
