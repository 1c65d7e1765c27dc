"""Issue 11, files and CLI: no file may crash the process, exhaust memory, run code or make
a loaded index answer wrongly. One regression test per finding (the bounded fuzz of every
loader is tests/fuzz_files/).

- memory-mapped index rewritten in place (truncated, ``cp`` over it): a clear error, never
  ``SIGBUS`` (run in a child process, so that a crash fails the test);
- crafted header numbers: huge class counts, negative / overlapping / outside sections;
- the model an index names is never loaded on its word (only registered names);
- names from files reach report.md and the terminal escaped;
- loader gaps: non-dict metadata, deep nesting, huge integers, unsorted CSR, NaN, next_id;
- killed saves leave no temporary file for ever; saves keep the file's permissions.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import semcbir_fast as sf
from semcbir_fast import _atomic
from semcbir_fast.index import IndexFormatError, SBSIndex, SparseSignatureIndex, load_index

M = 5
_PRE = struct.Struct("<8sIIQ8s")


def _maps(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.kron(rng.integers(0, M, (4, 4)), np.ones((8, 8), np.int64)).astype(np.uint8)
            for _ in range(n)]


def _sbs(n: int = 20, keys: list[str] | None = None) -> SBSIndex:
    idx = SBSIndex(sf.sbs_layout(M, 1), metadata={"model": "ade20k-mnv2"})
    idx.add(sf.encode_sbs(np.stack(_maps(n)), num_classes=M, levels=1), keys=keys)
    return idx


def _sbovp(n: int = 12) -> SparseSignatureIndex:
    pytest.importorskip("cv2")
    from semcbir_fast.features import Features
    from semcbir_fast.sbovp import Vocabulary

    rng = np.random.default_rng(3)
    feats = [Features(rng.uniform(0, 32, (8, 2)), rng.normal(size=(8, 8)).astype(np.float32),
                      (32, 32), "kaze") for _ in range(n)]
    sig = sf.create_signature("sbovp", num_classes=M,
                              vocabulary=Vocabulary.fit(feats, 4, seed=0))
    idx = SparseSignatureIndex(sig)
    idx.add(feats, _maps(n), keys=[f"/img/{i}.png" for i in range(n)])
    return idx


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    hlen = _PRE.unpack_from(raw)[2]
    dstart = (_PRE.size + hlen + 63) // 64 * 64
    return json.loads(raw[_PRE.size:_PRE.size + hlen]), raw[dstart:len(raw) - 24]


def _forge(path: Path, header: dict | str, data: bytes, out: Path) -> Path:
    """``out``: a container with ``header`` (a dict, or raw JSON text) over ``data``, its
    preamble and checksum recomputed: only the loader's own checks can reject it."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    dstart = (_PRE.size + len(text) + 63) // 64 * 64
    body = (_PRE.pack(b"\x89SBS\r\n\x1a\n", 1, len(text), dstart + len(data) + 24, b"\0" * 8)
            + text + b"\0" * (dstart - _PRE.size - len(text)) + data)
    out.write_bytes(body + hashlib.blake2b(body, digest_size=16).digest() + b"SBSIEND\n")
    return out


# ----------------------------------------------------------------------------- 2. mmap rewrites
_REWRITE = textwrap.dedent("""
    import os, shutil, sys, time
    import numpy as np
    import semcbir_fast as sf
    from semcbir_fast.index import IndexFormatError, SBSIndex, load_index

    path, other, how = sys.argv[1:4]
    lay = sf.sbs_layout(150, 3)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (4000, lay.stride), dtype=np.uint8)
    codes[:, lay.nbytes:] = 0
    idx = SBSIndex(lay)
    idx.add(codes)
    idx.save(path)
    small = SBSIndex(lay)
    small.add(codes[:10])
    small.save(other)
    back = load_index(path)  # memory-mapped
    assert back.is_mmap
    before = back.search(codes[3999], 3)
    time.sleep(0.05)  # the rewrite gets another modification time
    if how == "truncate":
        os.truncate(path, 4096)
    elif how == "cp":  # in place: same inode, truncated, then written
        shutil.copyfile(other, path)
    elif how == "same-size":
        with open(path, "r+b") as f:
            f.seek(len(f.read()) // 2)
            f.write(b"\\xff" * 4096)
    elif how == "rename":  # what save() does: the loaded index keeps the old file
        small.save(path)
    try:
        after = back.search(codes[3999], 3)
        print("OK", all(np.array_equal(a, b) for a, b in zip(before, after)))
    except IndexFormatError as exc:
        print("ERROR", exc)
""")


@pytest.mark.parametrize("how", ["truncate", "cp", "same-size", "rename"])
def test_mapped_index_rewritten_in_place_is_an_error_not_sigbus(tmp_path, how):
    r = subprocess.run([sys.executable, "-c", _REWRITE, str(tmp_path / "a.sbsi"),
                        str(tmp_path / "b.sbsi"), how], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # -7 would be SIGBUS
    if how == "rename":
        assert r.stdout.strip() == "OK True"
    else:
        assert r.stdout.startswith("ERROR") and "modified in place" in r.stdout, r.stdout


def test_mapped_sparse_index_checks_its_file(tmp_path):
    idx = _sbovp()
    p = idx.save(tmp_path / "a.sbli")
    back = load_index(p)
    q = back.reconstruct_batch([1])
    np.testing.assert_array_equal(back.search(q, 2)[1], idx.search(q, 2)[1])
    time.sleep(0.02)
    os.truncate(p, 1000)
    with pytest.raises(IndexFormatError, match="modified in place"):
        back.search(q, 2)
    with pytest.raises(IndexFormatError, match="modified in place"):
        back.reconstruct([0])
    assert load_index(idx.save(tmp_path / "b.sbli"), mmap=False).search(q, 2)[1][0, 0] == 1


# ----------------------------------------------------------------------------- 5. header numbers
def test_huge_class_counts_are_rejected_before_a_query_allocates(tmp_path):
    # the 1,176-byte file: an empty local index claiming 2**26 classes
    p = SparseSignatureIndex(_sbovp().signature).save(tmp_path / "e.sbli")
    h, data = _split(p)
    for classes in (2**26, 2**31, 65537):
        g = copy.deepcopy(h)
        g["params"]["num_classes"] = classes
        words = g["vocabulary"]["n_words"] * classes
        g["params"]["columns"] = words * words + classes
        with pytest.raises(IndexFormatError, match="num_classes"):
            load_index(_forge(p, g, data, tmp_path / "c.sbli"))
    # SBS: classes are bounded by the layout, the code size too (65,536 x 4**5 blocks: 40 MiB
    # per code, which no query could be encoded into)
    p = SBSIndex(sf.sbs_layout(M, 1)).save(tmp_path / "e.sbsi")
    h, data = _split(p)
    for classes, levels, match in ((2**26, 1, "num_classes"), (65536, 5, "codes of")):
        g = copy.deepcopy(h)
        nbits = 5 * classes * 4**levels
        g["layout"].update(num_classes=classes, levels=levels, nbits=nbits,
                           nbytes=(nbits + 7) // 8, stride=((nbits + 7) // 8 + 7) // 8 * 8)
        with pytest.raises(IndexFormatError, match=match):
            load_index(_forge(p, g, data, tmp_path / "c.sbsi"))


def test_negative_overlapping_and_outside_sections_are_rejected(tmp_path):
    p = _sbovp().save(tmp_path / "a.sbli")
    h, data = _split(p)
    # n_words = -1 with a section of -64 bytes read the rest of the file as centroids
    g = copy.deepcopy(h)
    g["vocabulary"]["n_words"] = -1
    g["sections"]["centroids"]["nbytes"] = -4 * g["vocabulary"]["width"]
    with pytest.raises(IndexFormatError, match="centroids"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))
    g = copy.deepcopy(h)
    g["sections"]["data"]["offset"] = g["sections"]["indices"]["offset"]
    g["sections"]["data"]["nbytes"] = g["sections"]["indices"]["nbytes"] // 2
    with pytest.raises(IndexFormatError, match="overlap"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))
    g = copy.deepcopy(h)
    g["sections"]["histograms"]["offset"] = (len(data) + 63) // 64 * 64
    with pytest.raises(IndexFormatError, match="data ends"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))
    g = copy.deepcopy(h)
    g["count"] += 1  # counts must match the sections' sizes
    with pytest.raises(IndexFormatError, match="bytes"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))
    g = copy.deepcopy(h)
    g["params"]["columns"] += 1
    with pytest.raises(IndexFormatError, match="columns"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))


def test_hybrid_columns_must_fit_the_signature(tmp_path):
    pytest.importorskip("cv2")
    from semcbir_fast.features import Features

    rng = np.random.default_rng(1)
    feats = [Features(rng.uniform(0, 32, (6, 2)), rng.normal(size=(6, 8)).astype(np.float32),
                      (32, 32), "kaze") for _ in range(4)]
    idx = SparseSignatureIndex(sf.create_signature("hybrid", num_classes=M))
    idx.add(feats, _maps(4))
    p = idx.save(tmp_path / "h.sbli")
    h, data = _split(p)
    for cols in (M * 8 + 1, M * 2000, 2**40):  # not whole classes; absurd descriptor widths
        g = copy.deepcopy(h)
        g["params"]["columns"] = cols
        with pytest.raises(IndexFormatError, match="columns|do not fit"):
            load_index(_forge(p, g, data, tmp_path / "x.sbli"))


# ----------------------------------------------------------------------------- 10. loader gaps
def test_header_type_depth_and_size_errors(tmp_path):
    p = _sbs(4).save(tmp_path / "a.sbsi")
    h, data = _split(p)
    bad = {
        "metadata list": {**h, "metadata": [1, 2]},
        "metadata str": {**h, "metadata": "x"},
        "has_keys str": {**h, "has_keys": "yes"},
        "pyramid str": {**h, "layout": {**h["layout"], "pyramid": "false"}},
        "count float": {**h, "count": 4.0},
        "next_id 2**64": {**h, "next_id": 2**64},
        "next_id -1": {**h, "next_id": -1},
        "next_id below ids": {**h, "next_id": 2},
        "version true": {**h, "version": True},
    }
    for what, g in bad.items():
        with pytest.raises(IndexFormatError):
            load_index(_forge(p, g, data, tmp_path / "x.sbsi"))
        assert what
    text = json.dumps(h)
    deep = text[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(IndexFormatError, match="corrupted header"):
        load_index(_forge(p, deep, data, tmp_path / "x.sbsi"))
    nested = text[:-1] + ', "x": ' + "[" * 65 + "]" * 65 + "}"  # under the parser's limit
    with pytest.raises(IndexFormatError, match="nested deeper"):
        load_index(_forge(p, nested, data, tmp_path / "x.sbsi"))
    huge = text.replace(f'"count": {h["count"]}', '"count": ' + "9" * 5000)
    with pytest.raises(IndexFormatError, match="corrupted header"):
        load_index(_forge(p, huge, data, tmp_path / "x.sbsi"))
    # every id used: next_id 2**63 is what the library writes after id 2**63 - 1
    full = SBSIndex(sf.sbs_layout(M, 0))
    full.add(np.zeros((1, full.layout.stride), np.uint8), ids=[2**63 - 1])
    assert SBSIndex.load(full.save(tmp_path / "f.sbsi")).info()["next_id"] == 2**63
    # the writer refuses what the reader refuses
    idx = _sbs(2)
    idx.metadata["deep"] = json.loads("[" * 70 + "]" * 70)
    with pytest.raises(ValueError, match="nested"):
        idx.save(tmp_path / "d.sbsi")


def test_sparse_structure_and_values_checked_at_load(tmp_path):
    idx = _sbovp()
    p = idx.save(tmp_path / "a.sbli")
    h, data = _split(p)
    d = bytearray(data)
    ip = np.frombuffer(data, "<i8", len(idx) + 1, h["sections"]["indptr"]["offset"])
    ix_off = h["sections"]["indices"]["offset"]
    row = next(r for r in range(len(idx)) if ip[r + 1] - ip[r] >= 2)
    a, b = ix_off + 8 * int(ip[row]), ix_off + 8 * int(ip[row]) + 8
    d[a:a + 8], d[b:b + 8] = data[b:b + 8], data[a:a + 8]  # two columns of a row swapped
    with pytest.raises(IndexFormatError, match="not increasing within a row"):
        load_index(_forge(p, h, bytes(d), tmp_path / "x.sbli"))
    for section, value, match in (("data", np.nan, "not finite"),
                                  ("data", np.inf, "not finite"),
                                  ("histograms", -1.0, "histogram")):
        d = bytearray(data)
        struct.pack_into("<f", d, h["sections"][section]["offset"], value)
        with pytest.raises(IndexFormatError, match=match):
            load_index(_forge(p, h, bytes(d), tmp_path / "x.sbli"))
    g = copy.deepcopy(h)
    g["metadata"] = ["x"]
    with pytest.raises(IndexFormatError, match="metadata"):
        load_index(_forge(p, g, data, tmp_path / "x.sbli"))


def test_npz_loaders_reject_crafted_members(tmp_path):
    pytest.importorskip("cv2")
    import io
    import zipfile

    from semcbir_fast.features import Features, load_features, save_features
    from semcbir_fast.sbovp import PhraseSignatures, Vocabulary

    rng = np.random.default_rng(0)
    feats = [Features(rng.uniform(0, 9, (5, 2)), rng.normal(size=(5, 4)).astype(np.float32),
                      (9, 9), "kaze") for _ in range(3)]
    vocab = Vocabulary.fit(feats, 2, seed=0)
    vocab.save(tmp_path / "v.npz")
    save_features(tmp_path / "f.npz", feats)
    PhraseSignatures(np.array([0, 2, 3]), np.array([1, 3, 0]), np.ones(3), 2).save(
        tmp_path / "p.npz")

    def rewrite(src: str, name: str, member: bytes) -> Path:
        with zipfile.ZipFile(tmp_path / src) as z:
            members = {i.filename: z.read(i) for i in z.infolist()}
        members[f"{name}.npy"] = member
        out = tmp_path / f"x{len(list(tmp_path.glob('x*')))}-{src}"
        with zipfile.ZipFile(out, "w") as z:
            for k, v in members.items():
                z.writestr(k, v)
        return out

    def npy(a) -> bytes:
        f = io.BytesIO()
        np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=True)
        return f.getvalue()

    def lying(shape: tuple) -> bytes:  # a header that declares far more data than it holds
        text = repr({"descr": "<f4", "fortran_order": False, "shape": shape})
        text += " " * (63 - (10 + len(text)) % 64) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + b"\0" * 8

    cases = [
        (Vocabulary.load, rewrite("v.npz", "centroids", lying((2**40,))), "declares"),
        (Vocabulary.load, rewrite("v.npz", "centroids", npy(np.full((2, 4), np.nan, "f4"))),
         "not finite"),
        (Vocabulary.load, rewrite("v.npz", "centroids", npy(np.array([object()] * 2))),
         "dtype"),
        (Vocabulary.load, rewrite("v.npz", "seed", npy(np.array(np.inf))), "seed"),
        (Vocabulary.load, rewrite("v.npz", "binary", npy(np.array("no"))), "binary"),
        (PhraseSignatures.load, rewrite("p.npz", "indices", npy(np.array([3, 1, 0]))),
         "increasing"),
        (PhraseSignatures.load, rewrite("p.npz", "indices", npy(np.array([1, 3, 4]))),
         "outside"),
        (PhraseSignatures.load, rewrite("p.npz", "data", npy(np.array([1, np.nan, 1]))),
         "finite"),
        (PhraseSignatures.load, rewrite("p.npz", "n_words", npy(np.array(-1))), "n_words"),
        (load_features, rewrite("f.npz", "counts", npy(np.array([-5, 10, 10]))), "counts"),
        (load_features, rewrite("f.npz", "descriptors", npy(np.zeros((15, 4), "f8"))),
         "descriptors"),
        (load_features, rewrite("f.npz", "image_size", lying((2**31, 2**31))), "declares"),
    ]
    for load, path, match in cases:
        with pytest.raises(ValueError, match=match):
            load(path)
    for load, name in ((Vocabulary.load, "v.npz"), (PhraseSignatures.load, "p.npz"),
                       (load_features, "f.npz")):
        raw = (tmp_path / name).read_bytes()
        (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
        with pytest.raises(ValueError, match="cannot read"):
            load(tmp_path / "t.npz")


def test_special_files_do_not_hang(tmp_path):
    fifo = tmp_path / "fifo.sbsi"
    os.mkfifo(fifo)
    with pytest.raises(IndexFormatError, match="not a regular file"):
        load_index(fifo)


# ----------------------------------------------------------------------------- 6. model choice
def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"model": None, "index": "x.sbsi", **kw})


def test_index_never_chooses_a_model_file(tmp_path):
    from semcbir_fast.cli._common import CLIError, index_model

    class Fake:
        metadata: ClassVar[dict] = {"model": str(tmp_path / "evil.pt")}

    with pytest.raises(CLIError, match="not a registered model name.*pass --model"):
        index_model(_args(), Fake())
    assert index_model(_args(model="mine.pt"), Fake()) == "mine.pt"  # the user's choice
    Fake.metadata = {"model": "ade20k-mnv2"}
    assert index_model(_args(), Fake()) == "ade20k-mnv2"
    Fake.metadata = {"model": ["ade20k-mnv2"]}
    with pytest.raises(CLIError, match="not a registered"):
        index_model(_args(), Fake())


def test_search_refuses_the_recorded_model_path(tmp_path, capsys, monkeypatch):
    pytest.importorskip("cv2")
    from semcbir_fast import segment
    from semcbir_fast.cli import main

    def never(*a, **k):  # pragma: no cover - the point: nothing is loaded
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(segment, "load_segmenter", never)
    import cv2

    img = tmp_path / "q.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    idx = _sbs(3, keys=["/a.png", "/b.png", "/c.png"])
    idx.metadata["model"] = str(tmp_path / "evil.pt")
    p = idx.save(tmp_path / "i.sbsi")
    assert main(["search", str(p), str(img), "-q"]) == 1
    err = capsys.readouterr().err
    assert "pass --model" in err and "evil.pt" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 7. escaping
def test_terminal_output_escapes_control_characters(tmp_path, capsys):
    from semcbir_fast.cli import main
    from semcbir_fast.cli._common import printable

    assert printable("a\x1b]0;owned\x07b\u202ec\x9b") == "a\\x1b]0;owned\\x07b\\u202ec\\x9b"
    assert printable("ümlaut/日本.png") == "ümlaut/日本.png"
    evil = tmp_path / "x\x1b[31mred\x1b]8;;https:e.vil\x07.png"
    evil.write_bytes(b"")
    idx = _sbs(2, keys=[os.path.abspath(evil), "/other\x1b[2J.png"])
    idx.metadata.update(model="ade20k-mnv2\x1b[5m", class_names=["a\x1b[1m"])
    p = idx.save(tmp_path / "i.sbsi")
    assert main(["search", str(p), str(evil), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out and "\\x1b[2J" in out
    assert main(["search", str(p), str(evil), "-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # JSON stays exact
    assert res["queries"][0]["results"][0]["key"] == os.path.abspath(evil)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[5m" in out and "\\x1b[2J" in out
    assert main(["info", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["model"] == "ade20k-mnv2\x1b[5m"


def test_report_markdown_escapes_names(tmp_path):
    pytest.importorskip("matplotlib")
    from semcbir_fast.eval import evaluate_sbs
    from semcbir_fast.eval.datasets import Dataset
    from semcbir_fast.report import _md, _md_code, write_report

    assert _md("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert _md("a|b [x](javascript:y) *z*") == "a\\|b \\[x\\](javascript:y) \\*z\\*"
    assert _md_code("a ` b") == "`` a ` b ``"
    names = {0: "<img src=x onerror=alert(1)>", 1: "a|b $\\frac{$ [l](http://x)"}
    ds = Dataset("t", tmp_path, [tmp_path / f"{i}.png" for i in range(6)], [0, 0, 0, 1, 1, 1],
                 category_names=names)
    res = evaluate_sbs(ds, _maps(6), num_classes=M, levels=[0], top=6,
                       settings={"segmentation": "<b>model</b>", "root": "/d/<script>"})
    files = write_report(res, tmp_path / "rep", gallery_queries=None,
                         command="semcbir eval --root '/x/`rm -rf`/<i>'")
    md = files["markdown"].read_text()
    assert "<img" not in md and "<script>" not in md and "<b>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "a\\|b \\$\\\\frac{\\$" in md
    assert "`` semcbir eval --root '/x/`rm -rf`/<i>' ``" in md
    data = json.loads(files["json"].read_text())  # report.json keeps the names exact
    assert data["settings"]["root"] == "/d/<script>"
    assert (tmp_path / "rep" / "per_category_ap.png").stat().st_size > 0  # `$` drew as text


# ----------------------------------------------------------------------------- 12. temp files, modes
def _aged(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_killed_saves_are_cleaned_up(tmp_path):
    target = tmp_path / "idx.sbsi"
    script = textwrap.dedent(f"""
        import os, signal
        from semcbir_fast._atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 100000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                           check=False)
        assert r.returncode == -signal.SIGKILL
    left = sorted(tmp_path.glob(".idx.sbsi.*.tmp"))
    assert len(left) == 3
    for p in left:
        _aged(p, 10)  # older than the grace period: no writer could still be starting
    keep = [tmp_path / ".idx.sbsi.tmp", tmp_path / ".other.sbsi.abcd1234.tmp",
            tmp_path / ".idx.sbsi.abcd1234.tmp.bak"]
    for p in keep:
        p.write_bytes(b"not ours")
        _aged(p, 7200)
    link = tmp_path / ".idx.sbsi.zzzz1234.tmp"
    link.symlink_to(tmp_path / ".idx.sbsi.tmp")
    _sbs(3).save(target)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in keep) and link.is_symlink()
    # the next load cleans up too
    (tmp_path / ".idx.sbsi.a1b2c3d4.tmp").write_bytes(b"x")
    _aged(tmp_path / ".idx.sbsi.a1b2c3d4.tmp", 10)
    assert len(load_index(target)) == 3
    assert not (tmp_path / ".idx.sbsi.a1b2c3d4.tmp").exists()


def test_a_live_writers_temporary_file_is_kept(tmp_path, monkeypatch):
    target = tmp_path / "t.bin"
    with _atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        _aged(tmp, 7200)
        assert _atomic.remove_stale_temporaries(target) == []  # its lock is held
        # someone else's fresh, unlocked temporary file is kept during the grace period
        fresh = tmp_path / ".t.bin.00000000.tmp"
        fresh.write_bytes(b"")
        assert _atomic.remove_stale_temporaries(target) == []
    assert target.read_bytes() == b"partial" and fresh.exists()
    # without file locks only the age tells: one hour
    monkeypatch.setattr(_atomic, "fcntl", None)
    _aged(fresh, 60)
    assert _atomic.remove_stale_temporaries(target) == []
    _aged(fresh, 7200)
    assert _atomic.remove_stale_temporaries(target) == [fresh]


def test_saves_keep_the_files_permissions(tmp_path):
    pytest.importorskip("cv2")
    from semcbir_fast.eval.cache import save_label_cache
    from semcbir_fast.gallery import write_gallery

    old = os.umask(0o027)
    try:
        new = _sbs(2).save(tmp_path / "new.sbsi")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0666 less the umask, not 0600
        shared = tmp_path / "shared.sbsi"
        shared.write_bytes(b"")
        os.chmod(shared, 0o664)
        _sbs(2).save(shared)
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664  # the replaced file's mode
        private = tmp_path / "private.sbsi"
        private.write_bytes(b"")
        os.chmod(private, 0o600)
        with _atomic.atomic_path(private) as tmp:
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o600  # never readable while written
            _sbs(2).save(tmp)
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        html = write_gallery([], tmp_path / "gal", png_name=None)
        assert stat.S_IMODE(html.stat().st_mode) == 0o640
        cache = tmp_path / "c" / "labels.npz"
        save_label_cache(cache, _maps(1), ["/a.png"])
        assert stat.S_IMODE(cache.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert fcntl  # the lock-based cleanup is exercised above on this platform
