"""Seed files written by the library itself, and the damaged / crafted variants of them that
the bounded file fuzz feeds to every loader (see test_fuzz_files.py).

Kinds (one loader each): ``sbs`` and ``sparse`` (index containers, ``load_index``),
``vocab`` (``Vocabulary.load``), ``phrases`` (``PhraseSignatures.load``), ``features``
(``load_features``) and ``labels`` (``load_label_cache``).

Categories: ``seed`` (the file as the library wrote it: must load and work), then the
mutations:

- ``truncate``: the file cut at a random length (and at every section boundary).
- ``bitflip``: 1-4 random bits flipped anywhere (checksums / CRCs catch most of them).
- ``resealed``: bits flipped, then the checksum (containers) or the zip CRCs (npz, the
  flip inside one ``.npy`` member) recomputed, so that the parser sees the damage.
- ``crafted``: header numbers replaced by extreme or mistyped values (containers: any JSON
  leaf, section offsets and sizes, metadata shape, deep nesting, huge integers; npz: meta
  scalars, array dtypes / shapes / values, ``.npy`` headers that lie about their size),
  the file otherwise valid (checksum or CRCs recomputed).
- ``combo``: two or three crafted changes at once, plus the issue's reproductions
  (``num_classes = 2**26``, ``n_words = -1`` with ``nbytes = -64``, ...).

Everything is derived from one ``numpy.random.Generator`` seed: the same cases every run.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import struct
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("sbs", "sparse", "vocab", "phrases", "features", "labels")
CATEGORIES = ("seed", "truncate", "bitflip", "resealed", "crafted", "combo")

# container layout (semcbir_fast.index.container)
_PRE = struct.Struct("<8sIIQ8s")
_TRAILER = 24


@dataclass
class Case:
    id: int
    kind: str
    category: str
    what: str
    data: bytes
    #: "rejected" for the issue's reproductions (a load that works is a finding: the file
    #: is known to be bad), else None (any clean outcome)
    expect: str | None = None


# ----------------------------------------------------------------------------- seeds
def write_seeds(folder: Path) -> dict[str, list[Path]]:
    """Write the seed files of every kind into ``folder`` with the library's own writers."""
    import semcbir_fast as sf
    from semcbir_fast.eval.cache import save_label_cache
    from semcbir_fast.features import Features, save_features
    from semcbir_fast.index import SBSIndex, SparseSignatureIndex
    from semcbir_fast.sbovp import Vocabulary, sbovp_signatures

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    m = 5
    maps = [np.kron(rng.integers(0, m, (4, 4)), np.ones((8, 8), np.int64)).astype(np.uint8)
            for _ in range(12)]
    feats = [Features(rng.uniform(0, 32, (k, 2)), rng.normal(size=(k, 8)).astype(np.float32),
                      (32, 32), "kaze") for k in rng.integers(3, 12, 12).tolist()]
    feats[4] = Features(np.zeros((0, 2)), np.zeros((0, 8), np.float32), (32, 32), "kaze")
    out: dict[str, list[Path]] = {k: [] for k in KINDS}

    lay = sf.sbs_layout(m, 1, pyramid=True)
    a = SBSIndex(lay, metadata={"model": "ade20k-mnv2", "class_names": list("abcde")})
    a.add(sf.encode_sbs(np.stack(maps), num_classes=m, levels=1, pyramid=True),
          ids=np.arange(12) * 3 + 1, keys=[f"/img/{i}.png" for i in range(12)])
    a.remove([4])
    out["sbs"].append(a.save(folder / "keys.sbsi"))
    b = SBSIndex(sf.sbs_layout(m, 0))
    b.add(sf.encode_sbs(np.stack(maps[:5]), num_classes=m, levels=0))
    out["sbs"].append(b.save(folder / "plain.sbsi"))
    out["sbs"].append(SBSIndex(sf.sbs_layout(m, 2)).save(folder / "empty.sbsi"))
    c = SBSIndex(lay, engine="sparse")  # the sparse storage: sparse_offsets / _entries / ...
    c.add(sf.encode_sbs(np.stack(maps), num_classes=m, levels=1, pyramid=True),
          keys=[f"/img/{i}.png" for i in range(12)])
    c.remove([2])
    out["sbs"].append(c.save(folder / "sparse.sbsi"))

    vocab = Vocabulary.fit(feats, 4, seed=0)
    sig = sf.create_signature("sbovp", num_classes=m, vocabulary=vocab)
    idx = SparseSignatureIndex(sig, metadata={"model": "ade20k-mnv2"})
    idx.add(feats, maps, keys=[f"/img/{i}.png" for i in range(12)])
    out["sparse"].append(idx.save(folder / "words.sbli"))
    hyb = SparseSignatureIndex(sf.create_signature("hybrid", num_classes=m))
    hyb.add(feats[:6], maps[:6])
    out["sparse"].append(hyb.save(folder / "hybrid.sbli"))
    out["sparse"].append(SparseSignatureIndex(sig).save(folder / "empty.sbli"))

    vocab.save(folder / "vocab.npz")
    out["vocab"].append(folder / "vocab.npz")
    phr = sbovp_signatures(feats, maps, vocab, n=2, normalize="l2", num_classes=m,
                           semantic_words=True, histogram_weight=1.0)
    phr.save(folder / "phrases.npz")
    out["phrases"].append(folder / "phrases.npz")
    save_features(folder / "features.npz", feats)
    out["features"].append(folder / "features.npz")
    save_label_cache(folder / "labels.npz", maps[:4], [f"/img/{i}.png" for i in range(4)])
    out["labels"].append(folder / "labels.npz")
    return out


# ----------------------------------------------------------------------------- containers
def _split_container(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, data area) of a valid container file."""
    _, _, hlen, _, _ = _PRE.unpack_from(raw, 0)
    header = json.loads(raw[_PRE.size:_PRE.size + hlen])
    dstart = (_PRE.size + hlen + 63) // 64 * 64
    return header, raw[dstart:len(raw) - _TRAILER]


def _seal_container(htext: bytes, data: bytes) -> bytes:
    """A container with header text ``htext`` and data area ``data``, preamble and checksum
    recomputed (what a careful forger does)."""
    dstart = (_PRE.size + len(htext) + 63) // 64 * 64
    size = dstart + len(data) + _TRAILER
    body = (_PRE.pack(b"\x89SBS\r\n\x1a\n", 1, len(htext), size, b"\0" * 8) + htext
            + b"\0" * (dstart - _PRE.size - len(htext)) + data)
    return body + hashlib.blake2b(body, digest_size=16).digest() + b"SBSIEND\n"


def _reseal_body(raw: bytes) -> bytes:
    body = raw[:len(raw) - _TRAILER]
    return body + hashlib.blake2b(body, digest_size=16).digest() + b"SBSIEND\n"


_BIG = "__BIG_INT__"
_DEEP = "__DEEP__"
_INTERESTING: list[Any] = [0, 1, -1, 2, -64, 63, 64, 65, 255, 2**16, 2**26, 2**31, 2**32 + 64,
                           2**62, 2**63 - 1, 2**63, 2**64, -(2**63), 1.5, -0.0, float("nan"),
                           float("inf"), float("-inf"), True, False, None, "x", "", [], {},
                           [1, 2], {"a": 1}, _BIG, _DEEP]


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (k,)
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield path + (i,)
            yield from _leaves(v, path + (i,))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()


def _dump(header: dict[str, Any]) -> bytes:
    text = json.dumps(header, separators=(",", ":"), sort_keys=True)
    text = text.replace(f'"{_BIG}"', "9" * 5000)
    text = text.replace(f'"{_DEEP}"', "[" * 200_000 + "]" * 200_000)
    return text.encode()


def _craft_header(rng: np.random.Generator, header: dict[str, Any]) -> tuple[dict, str]:
    h = copy.deepcopy(header)
    paths = list(_leaves(h))
    secs = sorted(h["sections"])
    r = rng.random()
    if r < 0.25:  # a section's numbers
        name = secs[rng.integers(len(secs))]
        key = ("offset", "nbytes")[rng.integers(2)]
        other = h["sections"][secs[rng.integers(len(secs))]]
        v = [other["offset"], other["nbytes"], -64, -1, 64, 2**40, 2**63, 1.5,
             other["offset"] + 64, max(0, h["sections"][name][key] - 64)][rng.integers(10)]
        h["sections"][name][key] = v
        return h, f"sections.{name}.{key}={v!r}"
    if r < 0.3:
        choice = rng.integers(4)
        if choice == 0:
            h["metadata"] = [["x"]] if rng.random() < 0.5 else "x"
        elif choice == 1:
            h["sections"] = []
        elif choice == 2:
            h["sections"]["extra"] = {"offset": 0, "nbytes": 64}
        else:
            h = [h]  # type: ignore[assignment]
        return h, f"structure {choice}"
    path = paths[rng.integers(len(paths))]
    v = _DELETE if rng.random() < 0.08 else _INTERESTING[rng.integers(len(_INTERESTING))]
    _set(h, path, v)
    return h, f"{'.'.join(map(str, path))}={'<deleted>' if v is _DELETE else repr(v)[:30]}"


def _container_cases(rng: np.random.Generator, raw: bytes, n: int
                     ) -> Iterator[tuple[str, str, bytes]]:
    header, data = _split_container(raw)
    dstart = len(raw) - _TRAILER - len(data)
    cuts = {0, 8, 31, 32, dstart, len(raw) - 1, len(raw) - _TRAILER}
    for s in header["sections"].values():
        cuts |= {dstart + s["offset"], dstart + s["offset"] + s["nbytes"]}
    for c in sorted(cuts):
        yield "truncate", f"cut {c}", raw[:c]
    for _ in range(n):
        c = int(rng.integers(0, len(raw)))
        yield "truncate", f"cut {c}", raw[:c]
    for _ in range(n):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        yield "bitflip", "flips", bytes(b)
    for _ in range(n):
        b = bytearray(raw)
        lo = _PRE.size if rng.random() < 0.7 else 0  # mostly past the preamble
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(lo, len(b) - _TRAILER))
            b[i] ^= 1 << int(rng.integers(8))
        yield "resealed", "flips + checksum", _reseal_body(bytes(b))
    for _ in range(2 * n):
        h, what = _craft_header(rng, header)
        yield "crafted", what, _seal_container(_dump(h), data)
    for _ in range(n):
        h, whats = header, []
        for _ in range(int(rng.integers(2, 4))):
            if not isinstance(h, dict) or not isinstance(h.get("sections"), dict):
                break
            try:
                h, what = _craft_header(rng, h)
            except (TypeError, KeyError, IndexError, AttributeError, ValueError):
                continue  # an earlier change removed what this one would change
            whats.append(what)
        yield "combo", " & ".join(whats), _seal_container(_dump(h), data)
    yield from _container_reproductions(header, data)


def _container_reproductions(header: dict[str, Any], data: bytes
                             ) -> Iterator[tuple[str, str, bytes]]:
    """The issue's minimal reproductions, sealed."""
    def sealed(h: Any) -> bytes:
        return _seal_container(_dump(h), data)

    shapes = ((2**26, 1), (2**31, 1), (65537, 0), (65536, 12), (65536, 5))
    for classes, levels in shapes if "layout" in header else shapes[:3]:
        h = copy.deepcopy(header)
        if "layout" in h:  # the numbers a forger makes consistent: bits, bytes, stride
            nbits = 5 * classes * 4**levels
            h["layout"].update(num_classes=classes, levels=levels, pyramid=False, nbits=nbits,
                               nbytes=(nbits + 7) // 8, stride=((nbits + 7) // 8 + 7) // 8 * 8)
        if "params" in h:
            p = h["params"]
            p["num_classes"] = classes
            if "vocabulary" in h and p.get("semantic_words"):
                words = h["vocabulary"]["n_words"] * classes
                p["columns"] = words * words + (classes if p.get("histogram_weight") else 0)
        what = f"num_classes={classes}" + (f" levels={levels}" if "layout" in h else "")
        yield "combo", f"repro: {what}", sealed(h)
    if "vocabulary" in header:
        h = copy.deepcopy(header)
        h["vocabulary"]["n_words"] = -1
        h["sections"]["centroids"]["nbytes"] = -4 * h["vocabulary"]["width"]
        yield "combo", "repro: n_words=-1 nbytes<0", sealed(h)
    for v in (2**63, 2**64, -1) if "next_id" in header else ():
        # 2**63: every id used (the library writes it then): valid
        h = copy.deepcopy(header)
        h["next_id"] = v
        yield "combo", f"{'' if v == 2**63 else 'repro: '}next_id={v}", sealed(h)
    h = copy.deepcopy(header)
    h["metadata"] = _DEEP
    yield "combo", "repro: 200000 nested lists", sealed(h)
    h = copy.deepcopy(header)
    h["metadata"] = ["not", "a", "dict"]
    yield "combo", "repro: metadata is a list", sealed(h)
    h = copy.deepcopy(header)
    h["count"] = _BIG
    yield "combo", "repro: 5000-digit count", sealed(h)
    names = sorted(header["sections"], key=lambda n: header["sections"][n]["offset"])
    big = [n for n in names if header["sections"][n]["nbytes"] >= 16]
    if len(big) >= 2:  # two sections over the same bytes
        h = copy.deepcopy(header)
        a, b = big[0], big[1]
        h["sections"][b]["offset"] = h["sections"][a]["offset"]
        yield "combo", f"repro: {b} over {a}", sealed(h)


# ----------------------------------------------------------------------------- npz
def _npy(arr: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=True)
    return f.getvalue()


def _npy_lying(arr: np.ndarray, shape: Any, descr: Any = None) -> bytes:
    """An .npy member whose header declares ``shape`` (and ``descr``) over ``arr``'s bytes."""
    d = {"descr": descr if descr is not None else np.lib.format.dtype_to_descr(arr.dtype),
         "fortran_order": False, "shape": shape}
    text = repr(d)
    pad = 64 - (10 + len(text) + 1) % 64
    h = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + arr.tobytes()


def _zip(members: dict[str, bytes], compress: int) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def _npz_members(raw: bytes) -> tuple[dict[str, bytes], int]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        infos = z.infolist()
        return {i.filename: z.read(i) for i in infos}, infos[0].compress_type


def _crafted_value(rng: np.random.Generator, a: np.ndarray) -> tuple[Any, str]:
    if a.ndim == 0:
        vals: list[Any] = [-1, 0, 2**62, -(2**62), 2**63 - 1, 1.5, np.nan, np.inf, "x", "",
                           True, np.array([1, 2]), np.zeros((2, 2), np.float32)]
        v = vals[rng.integers(len(vals))]
        return np.asarray(v), f"scalar -> {v!r}"[:60]
    r = int(rng.integers(9))
    if r == 0:
        if a.dtype.kind in "US":
            return np.zeros(a.shape, np.int64), "dtype int64"
        return a.astype(np.float64) if a.dtype != np.float64 else a.astype(np.int8), "dtype"
    if r == 1:
        return a.reshape(-1), "flattened"
    if r == 2:
        return a.reshape(a.shape + (1,)), "extra dim"
    if r == 3:
        return a[: max(0, a.shape[0] - int(rng.integers(1, 3)))], "rows dropped"
    if r == 4:
        b = a.astype(np.float32) if a.dtype.kind == "f" else a.copy()
        if b.size:
            flat = b.reshape(-1)
            j = int(rng.integers(b.size))
            flat[j] = [np.nan, np.inf, -1][rng.integers(3)] if b.dtype.kind == "f" else \
                [-1, -(2**30), 2**30][rng.integers(3)] if b.dtype.kind == "i" else 0
        return b, "one value"
    if r == 5:
        return np.zeros((0,) + a.shape[1:], a.dtype), "empty"
    if r == 6:
        return np.array([object()] * 2, dtype=object), "object array"
    if r == 7:
        b = a.copy()
        if b.size > 1:
            b.reshape(-1)[:] = b.reshape(-1)[::-1]
        return b, "reversed"
    return np.asarray(a, dtype=a.dtype.newbyteorder(">")), "big-endian"


def _npz_cases(rng: np.random.Generator, raw: bytes, n: int
               ) -> Iterator[tuple[str, str, bytes]]:
    members, compress = _npz_members(raw)
    names = sorted(members)
    for _ in range(n):
        c = int(rng.integers(0, len(raw)))
        yield "truncate", f"cut {c}", raw[:c]
    for _ in range(n):
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        yield "bitflip", "flips", bytes(b)
    for _ in range(n):
        name = names[rng.integers(len(names))]
        m = bytearray(members[name])
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(m)))
            m[i] ^= 1 << int(rng.integers(8))
        yield "resealed", f"{name} flipped", _zip({**members, name: bytes(m)}, compress)
    arrays = {k[:-4]: np.lib.format.read_array(io.BytesIO(v), allow_pickle=False)
              for k, v in members.items()}

    def crafted() -> tuple[dict[str, bytes], str]:
        name = sorted(arrays)[rng.integers(len(arrays))]
        a = arrays[name]
        r = rng.random()
        if r < 0.1:
            return {k: v for k, v in members.items() if k != f"{name}.npy"}, f"{name} removed"
        if r < 0.3 and a.ndim:
            shape = [(2**40,), (-1,), (a.shape[0] + 1,) + a.shape[1:], (2**31, 2**31),
                     a.shape[::-1] + (3,), ()][rng.integers(6)]
            return {**members, f"{name}.npy": _npy_lying(a, tuple(shape))}, \
                f"{name} header shape {shape}"
        if r < 0.35:
            descr = ["|O", "<U0", [("a", "<i4")], "<M8[s]", "V8", "<i4"][rng.integers(6)]
            return {**members, f"{name}.npy": _npy_lying(a, a.shape, descr)}, \
                f"{name} header descr {descr}"
        v, what = _crafted_value(rng, a)
        return {**members, f"{name}.npy": _npy(v)}, f"{name} {what}"

    for _ in range(2 * n):
        mem, what = crafted()
        yield "crafted", what, _zip(mem, compress)
    for _ in range(n):
        mem, whats = dict(members), []
        for _ in range(int(rng.integers(2, 4))):
            m2, what = crafted()
            changed = {k: v for k, v in m2.items() if members.get(k) != v}
            mem.update(changed)
            for k in set(members) - set(m2):
                mem.pop(k, None)
            whats.append(what)
        yield "combo", " & ".join(whats), _zip(mem, compress)
    # zip-level lies: a member claiming a huge uncompressed size, duplicated members
    big = bytearray(raw)
    j = big.find(b"PK\x01\x02")
    if j >= 0:
        struct.pack_into("<I", big, j + 24, 0x7FFFFFFF)  # central directory file size
        yield "combo", "zip size lie", bytes(big)
    f = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(f, "w", compression=compress) as z:
        warnings.simplefilter("ignore")
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(names[0], members[names[-1]])  # the same name twice, other contents
    yield "combo", "duplicate members", f.getvalue()


# ----------------------------------------------------------------------------- all cases
def make_cases(seeds: dict[str, list[Path]], per_seed: int, seed: int = 20260511
               ) -> list[Case]:
    """The fuzz cases: ``per_seed`` of each mutation per seed file (twice as many crafted),
    plus the fixed boundary cuts and reproductions."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    for kind in KINDS:
        for path in seeds[kind]:
            raw = path.read_bytes()
            cases.append(Case(len(cases), kind, "seed", f"{path.name}: as written", raw))
            gen = (_container_cases(rng, raw, per_seed) if kind in ("sbs", "sparse")
                   else _npz_cases(rng, raw, per_seed))
            for category, what, data in gen:
                cases.append(Case(len(cases), kind, category, f"{path.name}: {what}", data,
                                  "rejected" if what.startswith("repro:") else None))
    return cases
