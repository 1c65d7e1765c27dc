"""``semcbir info INDEX``: describe an index file."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ._common import open_index, printable

HELP = "describe an index file"


def register(sub: Any) -> None:
    p = sub.add_parser("info", help=HELP)
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the checksum (faster on huge files)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import FORMAT_VERSION

    index = open_index(args.index, verify=not args.no_verify)
    md = dict(index.metadata)
    classes = md.pop("class_names", None)
    summary = index.info()
    info: dict[str, Any] = {
        "file": os.path.abspath(args.index),
        "bytes": os.path.getsize(args.index),
        "format_version": FORMAT_VERSION,
        "checksum": "skipped" if args.no_verify else "ok",
        "signature": index.signature.name,
        "count": len(index),
        "has_keys": index.has_keys,
        **{k: v for k, v in summary.items()
           if k not in ("count", "has_keys", "metadata", "removed", "next_id")},
    }
    if "layout" in info:
        info["layout"]["blocks"] = index.layout.blocks
    info.update(metadata=md, num_class_names=len(classes) if isinstance(classes, list) else 0)
    if args.json:
        info["metadata"]["class_names"] = classes
        print(json.dumps(info, indent=1))
        return 0
    # text from the file (metadata, class names, paths) is printed with control characters
    # escaped (printable); --json keeps it exact
    rows: list[tuple[str, str]] = [
        ("index", (f"{info['file']} ({info['bytes']:,} bytes, format v{FORMAT_VERSION}, "
                   f"checksum {info['checksum']})")),
        ("images", f"{len(index)}" + (" (with paths)" if index.has_keys else "")),
        ("signature", index.describe()),
    ]
    for line in index.storage_lines():  # "label   value" lines of the index kind
        label, _, value = line.partition(" ")
        rows.append((label, value.lstrip()))
    sets = [k for k in md if k.endswith("_set")]
    for k in ("model", "model_name", "runtime", "ignore_index", *sets, "image_root", "created",
              "updated", "library_version", "device"):
        if k in md:
            rows.append((k.replace("_", " "), str(md[k])))
    if classes:
        names = [str(c) for c in classes] if isinstance(classes, list) else [str(classes)]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        rows.append(("classes", f"{len(names)}: {shown}"))
    if index.has_keys and len(index):
        ks = index.keys()
        rows += [("first", ks[0]), ("last", ks[-1])]
    width = max(len(label) for label, _ in rows)  # one column, however long a label
    for label, value in rows:
        print(printable(f"{label:<{width}} {value}"))
    return 0
