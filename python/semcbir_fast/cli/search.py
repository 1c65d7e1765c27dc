"""``semcbir search INDEX IMAGE...``: the k nearest indexed images of query images."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import (
    CLIError,
    add_engine_option,
    add_model_options,
    add_root_option,
    open_index,
    positive_int,
    printable,
    query,
)

HELP = "rank the indexed images for query images"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "search", help=HELP,
        description="Print the k nearest indexed images of each query image by the index's "
        "distance (Hamming for SBS; L2 with the histogram filter for SBoVP / hybrid; the "
        "settings are the index's); ties: smaller id first. A query that is already in the "
        "index is looked up, not segmented again.")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-k", type=positive_int, default=10, help="results per query (10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--resegment", action="store_true",
                   help="segment query images even when they are in the index")
    p.add_argument("--threads", type=int, default=0, help="search threads (0 = all cores)")
    add_engine_option(p, "search")
    add_root_option(p)
    add_model_options(p, model_default=None)
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    index = open_index(args.index, engine=args.engine)
    if len(index) == 0:
        raise CLIError(f"{args.index} is empty")
    res = query(args, index, args.images, args.k)
    integer = index.signature.integer_distances
    filtered = getattr(index.signature, "filter_epsilon", None) is not None
    out = []
    for j, img in enumerate(args.images):
        results = []
        for r, (i, d, key) in enumerate(zip(res.ids[j], res.distances[j], res.keys[j])):
            if i < 0:
                continue
            item: dict[str, Any] = {"rank": r + 1, "id": int(i),
                                    "distance": int(d) if integer else float(d), "key": key}
            if not integer:
                item["penalised"] = bool(res.penalised[j, r])
            results.append(item)
        out.append({"query": img, "code_from": res.source[j], "results": results})
    if args.json:
        print(json.dumps({"index": args.index, "signature": index.signature.name, "k": args.k,
                          "queries": out}, indent=1))
        return 0
    # paths are printed with control characters escaped (printable); --json keeps them exact
    for q in out:
        how = "looked up in the index" if q["code_from"] == "index" else "segmented"
        print(f"query {printable(q['query'])}  ({how})")
        print(f"  {'rank':>4}  {'distance':>8}  {'id':>7}  path")
        for r in q["results"]:
            d = f"{r['distance']:>8}" if integer else f"{r['distance']:>8.4f}"
            flag = "  (filtered)" if r.get("penalised") else ""
            print(f"  {r['rank']:>4}  {d}  {r['id']:>7}  {printable(r['key'] or '')}{flag}")
    if filtered and res.penalised.any():
        print("(filtered): outside the semantic-histogram filter, ranked after the others")
    return 0
