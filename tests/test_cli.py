"""The ``semcbir`` command line, in-process through ``main(argv)`` and once as a subprocess.

Segmentation runs with a tiny scripted TorchScript model (a 1x1 convolution that labels
pixels red / green / blue / dark) so that indexing is instant; two tests run the real
default model (the ADE20K + VOC composite) on three images, and ADE20K alone on one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model
from semcbir_fast.cli import main

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.save.*:DeprecationWarning")

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 10, 10)]


def _image(rng: np.random.Generator, main_colour: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:] = COLOURS[main_colour]
    for _ in range(2):
        y, x = rng.integers(0, 40), rng.integers(0, 56)
        img[y : y + rng.integers(6, 20), x : x + rng.integers(6, 30)] = COLOURS[rng.integers(0, 4)]
    return img


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny model, a two-category image tree, a junk folder with a broken file, a cache."""
    base = tmp_path_factory.mktemp("cli")
    model = make_tiny_model(base / "model" / "tiny-rgb.pt")
    rng = np.random.default_rng(0)
    tree = base / "tree"
    for cat, colour, sub in (("reds", 0, ""), ("blues", 2, "deeper")):
        d = tree / cat / sub
        d.mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(str(d / f"{cat}{i}.png"), _image(rng, colour)[:, :, ::-1])
    junk = base / "junk"
    junk.mkdir()
    (junk / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEMCBIR_CACHE", str(base / "cache"))
        yield {"base": base, "model": str(model), "tree": tree, "junk": junk}


@pytest.fixture(scope="module")
def built(env):
    idx = env["base"] / "tree.sbsi"
    rc = main(
        [
            "index",
            str(env["tree"]),
            str(env["junk"]),
            "-o",
            str(idx),
            "--model",
            env["model"],
            "--levels",
            "1",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert rc == 0
    return idx


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str, command: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith(f"semcbir {command}: error:") or "error:" in lines[-1], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- index / info / search
def test_index_reports_skipped_files_and_info(env, built, capsys):
    from semcbir_fast.index import SBSIndex

    idx = SBSIndex.load(built)
    assert len(idx) == 10
    assert all(k.endswith(".png") and os.path.isabs(k) for k in idx.keys())  # noqa: SIM118 (an index)
    assert idx.metadata["model_name"] == "tiny-rgb" and idx.metadata["class_names"][3] == "dark"
    assert idx.layout.levels == 1 and idx.layout.num_classes == 4
    rc, out, err = _run(capsys, ["info", str(built)])
    assert rc == 0 and re.search(r"^images +10 \(with paths\)$", out, re.MULTILINE)
    assert "4 classes x 4 blocks" in out
    # one column for the values, whatever the labels' lengths
    col = len("library version ")  # the longest label here
    assert all(ln[col - 1] == " " and ln[col] != " " for ln in out.splitlines()), out
    assert re.search(r"^image root +\S*/tree$", out, re.MULTILINE)
    rc, out, _ = _run(capsys, ["info", str(built), "--json"])
    info = json.loads(out)
    assert info["count"] == 10 and info["metadata"]["class_names"] == [
        "red",
        "green",
        "blue",
        "dark",
    ]
    # the broken file was skipped and named on stderr
    out_dir = env["base"] / "again.sbsi"
    rc, out, err = _run(
        capsys,
        [
            "index",
            str(env["junk"]),
            str(env["tree"] / "reds"),
            "-o",
            str(out_dir),
            "--model",
            env["model"],
            "--device",
            "cpu",
        ],
    )
    assert rc == 0 and "broken.jpg" in err and "1 unreadable file skipped" in err
    assert "5 images (5 added, 1 skipped)" in out
    # --append remembers the unreadable file and does not try it again while it is unchanged
    again = ["index", str(env["junk"]), str(env["tree"] / "reds"), "-o", str(out_dir),
             "--model", env["model"], "--device", "cpu", "--append"]
    rc, out, err = _run(capsys, again)
    assert rc == 0 and "1 files that could not be read before" in err and "unchanged" in out
    rc, out, err = _run(capsys, [*again, "--retry-unreadable"])
    assert rc == 0 and "1 unreadable file skipped" in err


def test_search_text_and_json(env, built, capsys):
    q = min((env["tree"] / "reds").glob("*.png"))
    rc, out, _ = _run(capsys, ["search", str(built), str(q), "-k", "3"])
    assert rc == 0 and "looked up in the index" in out
    first = out.splitlines()[2].split()
    assert first[:2] == ["1", "0"] and first[-1] == str(q.resolve())
    rc, out, _ = _run(capsys, ["search", str(built), str(q), "-k", "4", "--json"])
    looked = json.loads(out)["queries"][0]
    rc, out, _ = _run(
        capsys,
        ["search", str(built), str(q), "-k", "4", "--json", "--resegment", "--device", "cpu", "-q",
         "--model", env["model"]],
    )
    fresh = json.loads(out)["queries"][0]
    assert looked["code_from"] == "index" and fresh["code_from"] == "segmented"
    assert looked["results"] == fresh["results"]  # same codes either way
    assert [r["rank"] for r in fresh["results"]] == [1, 2, 3, 4]
    assert all("reds" in r["key"] for r in fresh["results"][:3])
    # an image outside the index is segmented with the model the user names: the index
    # records a model file, which it may not choose on its own (issue 11)
    outside = env["base"] / "outside.png"
    cv2.imwrite(str(outside), _image(np.random.default_rng(5), 2)[:, :, ::-1])
    rc, _, err = _run(capsys, ["search", str(built), str(outside), "-k", "2", "--json", "-q"])
    assert rc == 1 and "pass --model" in err
    rc, out, _ = _run(capsys, ["search", str(built), str(outside), "-k", "2", "--json", "-q",
                               "--model", env["model"]])
    res = json.loads(out)["queries"][0]
    assert rc == 0 and res["code_from"] == "segmented" and "blues" in res["results"][0]["key"]


def test_append_adds_only_new_images(env, capsys):
    folder = env["base"] / "grow"
    shutil.copytree(env["tree"] / "reds", folder)
    idx = env["base"] / "grow.sbsi"
    args = ["index", str(folder), "-o", str(idx), "--model", env["model"], "--device", "cpu", "-q"]
    assert main(args) == 0
    rc, _, err = _run(capsys, args)
    assert rc == 1 and "--append" in err
    _one_error_line(err, "index")
    shutil.copy(next((env["tree"] / "blues").rglob("*.png")), folder / "new.png")
    rc, out, _ = _run(capsys, [*args, "--append"])
    assert rc == 0 and "6 images (1 added, 0 skipped)" in out
    rc, out, _ = _run(capsys, [*args, "--append"])
    assert rc == 0 and "unchanged" in out
    rc, _, err = _run(capsys, [*args, "--append", "--levels", "3"])
    assert rc == 1 and "differs from the index" in err
    rc, out, _ = _run(capsys, [*args, "--overwrite", "--levels", "0"])
    assert rc == 0 and "6 images (6 added" in out


def test_user_mistakes_print_one_line(env, built, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.sbsi"
    data = bytearray(built.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    corel_like = tmp_path / "corel"
    (corel_like / "images").mkdir(parents=True)
    for i in (0, 100):
        cv2.imwrite(str(corel_like / "images" / f"{i}.jpg"), np.zeros((8, 8, 3), np.uint8))
    cases = [
        (["search", str(tmp_path / "missing.sbsi"), "x.png"], "search", "no index file"),
        (["info", str(corrupt)], "info", "checksum mismatch"),
        (["info", str(env["model"])], "info", "not a semcbir index"),
        (
            ["index", str(tmp_path / "nope"), "-o", str(tmp_path / "o.sbsi")],
            "index",
            "no such folder",
        ),
        (
            ["index", str(env["tree"]), "-o", str(tmp_path / "no" / "o.sbsi")],
            "index",
            "does not exist",
        ),
        (
            [
                "index",
                str(env["tree"]),
                "-o",
                str(tmp_path / "o.sbsi"),
                "--model",
                "no-such-model",
                "-q",
            ],
            "index",
            "neither a registered segmenter",
        ),
        (["search", str(built), str(tmp_path / "missing.png")], "search", "no such image file"),
        (
            ["eval", "--dataset", "corel1k", "--root", str(corel_like), "--oracle"],
            "eval",
            "--oracle needs ground-truth",
        ),
        (["eval", "--dataset", "msrc", "--root", str(tmp_path)], "eval", "no images"),
        (
            ["gallery", str(built), str(tmp_path / "missing.png"), "-o", str(tmp_path / "g")],
            "gallery",
            "no such image file",
        ),
    ]
    for argv, cmd, match in cases:
        rc, out, err = _run(capsys, argv)
        assert rc == 1, (argv, err)
        assert match in err, (argv, err)
        assert len(err.strip().splitlines()) <= 2, err  # at most a status line + the error
        _one_error_line(err, cmd)
    for argv in (
        ["index", str(env["tree"]), "-o", "x", "--levels", "13"],
        [],
        ["frobnicate"],
        ["search", str(built), "q.png", "-k", "0"],
    ):
        rc, _, err = _run(capsys, argv)
        assert rc == 2 and "usage: semcbir" in err and "Traceback" not in err
    rc, out, _ = _run(capsys, ["--version"])
    assert rc == 0 and "semcbir_fast" in out


# ----------------------------------------------------------------------------- eval / gallery
def test_eval_folders_with_model_cache_and_report(env, capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))  # starts empty
    rep = env["base"] / "report"
    argv = [
        "eval",
        "--dataset",
        "folders",
        "--root",
        str(env["tree"]),
        "--model",
        env["model"],
        "--device",
        "cpu",
        "--levels",
        "0",
        "1",
        "-k",
        "3",
        "--report",
        str(rep),
        "-q",
    ]
    rc, out, _ = _run(capsys, argv)
    assert rc == 0, out
    assert "2 categories" in out and "4^0=1" in out and "4^1=4" in out and "P@3" in out
    maps = json.loads((rep / "report.json").read_text())
    assert maps["settings"]["label_cache"] == "miss"
    assert maps["results"][1]["map"] > 0.6  # the colours separate the two categories
    assert maps["command"].startswith("semcbir eval --dataset folders")
    for f in (
        "report.md",
        "map_vs_blocks.png",
        "pr_curves.png",
        "per_category_ap.png",
        "gallery.html",
    ):
        assert (rep / f).is_file(), f
    (store,) = (tmp_path / "cache" / "labels").glob("tiny-rgb-*")
    n_images = len([f for f in env["tree"].rglob("*.png")])
    assert len(list(store.glob("*/*.npz"))) == n_images  # one entry per image
    rc, out, _ = _run(capsys, [*argv[:-3], "--json", "-q"])
    second = json.loads(out)
    assert second["settings"]["label_cache"] == "hit"
    assert [r["map"] for r in second["results"]] == [r["map"] for r in maps["results"]]
    # the cache is per image and shared by every command: an index of a new image set
    # segments only its new images, and eval of a subset hits
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(2):
        cv2.imwrite(str(extra / f"new{i}.png"),
                    _image(np.random.default_rng(9 + i), 1)[:, :, ::-1])
    rc, out, err = _run(capsys, ["index", str(env["tree"]), str(extra), "-o",
                                 str(tmp_path / "t.sbsi"), "--model", env["model"],
                                 "--levels", "1", "--device", "cpu"])
    assert rc == 0, err
    assert f"({n_images + 2} added, 0 skipped)" in out
    assert f"{n_images} label maps from the cache" in out  # only the 2 new ones segmented
    assert len(list(store.glob("*/*.npz"))) == n_images + 2
    rc, out, _ = _run(capsys, [*argv[:-3], "--json", "-q", "--limit", "4"])
    assert rc == 0 and json.loads(out)["settings"]["label_cache"] == "hit"
    rc, out, _ = _run(capsys, [*argv[:-3], "--json", "-q", "--no-cache"])
    assert json.loads(out)["settings"]["label_cache"] == "off"


def test_moved_images_warn_and_reroot(env, capsys, tmp_path):
    """An index whose image folder moved: a warning naming --root, and --root fixes it."""
    src = tmp_path / "photos"
    shutil.copytree(env["tree"], src)
    idx = tmp_path / "p.sbsi"
    rc, _, err = _run(capsys, ["index", str(src), "-o", str(idx), "--model", env["model"],
                               "--levels", "1", "--device", "cpu", "-q"])
    assert rc == 0, err
    moved = tmp_path / "elsewhere" / "photos2"
    moved.parent.mkdir()
    src.rename(moved)
    q = str(min((moved / "reds").glob("*.png")))
    base = ["search", str(idx), q, "-k", "3", "--model", env["model"], "--device", "cpu"]
    rc, out, err = _run(capsys, [*base, "--json"])
    assert rc == 0, err
    assert "3 result images of 3 not found" in err and "--root NEWDIR" in err
    assert str(src) in err  # where they were indexed
    assert json.loads(out)["queries"][0]["code_from"] == "segmented"
    rc, out, err = _run(capsys, [*base, "--json", "--root", str(moved)])
    assert rc == 0 and "not found" not in err, err
    res = json.loads(out)["queries"][0]
    assert res["code_from"] == "index"  # the query is recognised under the new root
    assert res["results"][0]["key"] == q
    assert all(Path(r["key"]).is_file() and r["key"].startswith(str(moved))
               for r in res["results"])
    # the gallery reads the images from the new root: no unreadable boxes
    gal = tmp_path / "gal"
    rc, _, err = _run(capsys, ["gallery", str(idx), q, "-o", str(gal), "-k", "3", "--root",
                               str(moved), "--model", env["model"], "--device", "cpu",
                               "--categories", "parent", "-q"])
    assert rc == 0, err
    html = (gal / "gallery.html").read_text()
    assert "(unreadable)" not in html and "semcbir: 1 query on p.sbsi" in html
    assert f'<span class="fn">{Path(q).name}</span>' in html  # file names shown, not on hover only


def test_search_rejects_a_non_image_before_loading_the_model(env, built, capsys, tmp_path,
                                                             monkeypatch):
    from semcbir_fast.cli import _common

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(_common, "load_model", boom)
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    rc, _, err = _run(capsys, ["search", str(built), str(txt), "--model", env["model"]])
    assert rc == 1 and "cannot read query image" in err and "notes.txt" in err
    _one_error_line(err, "search")


def test_cli_wording_and_plurals():
    from semcbir_fast.cli._common import cli_wording, plural

    msg = ("dtype=torch.float16 is not supported on the CPU; use dtype=torch.bfloat16 or a "
           "CUDA device, or pass device='cpu' with runtime='torch'")
    assert cli_wording(msg) == ("--dtype float16 is not supported on the CPU; use --dtype "
                                "bfloat16 or a CUDA device, or pass --device cpu with "
                                "--runtime torch")
    assert [plural(n, "query") for n in (0, 1, 2)] == ["0 queries", "1 query", "2 queries"]
    assert plural(1, "image") == "1 image" and plural(3, "key") == "3 keys"


def test_gallery_category_names_from_corel_labels(tmp_path):
    from semcbir_fast.cli.gallery import category_of

    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text("class_id,class_name\n0,africa\n3,buses\n")
    img = tmp_path / "images" / "305.jpg"
    assert category_of(str(img), "corel1k") == "buses"
    assert category_of(str(tmp_path / "images" / "512.jpg"), "corel1k") == "5"  # unnamed
    assert category_of("/x/12_3_s.bmp", "msrc") == "group 12"
    assert category_of("/x/cats/a.png", "parent") == "cats"


def test_gallery_command(env, built, capsys):
    out_dir = env["base"] / "gal"
    qs = [
        str(sorted((env["tree"] / "reds").glob("*.png"))[1]),
        str(min((env["tree"] / "blues").rglob("*.png"))),
    ]
    rc, _, err = _run(
        capsys,
        [
            "gallery",
            str(built),
            *qs,
            "-o",
            str(out_dir),
            "-k",
            "6",
            "--categories",
            "parent",
            "--overlay",
            "--model",
            env["model"],
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert rc == 0, err
    html = (out_dir / "gallery.html").read_text()
    assert html.count('class="q"') == 2 and 'class="ok"' in html and 'class="bad"' in html
    assert 'class="ov"' in html and "red</span>" in html  # overlays and their legend
    assert (out_dir / "gallery.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_msrc_oracle_cli(capsys):
    from semcbir_fast.eval import datasets

    try:
        ds = datasets.msrc()
    except FileNotFoundError:
        pytest.skip("MSRC v1 data not found")
    if not ds.has_ground_truth:
        pytest.skip("MSRC v1 ground truth not found")
    rc, out, _ = _run(capsys, ["eval", "--dataset", "msrc", "--oracle", "-q"])
    assert rc == 0
    assert "MSRC v1: 240 images, 8 categories" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("MAP MSRC v1 (oracle)"))
    assert [float(v) for v in row.split("|")[1:]] == [0.8474, 0.8895, 0.8948, 0.8907]
    rc, out, _ = _run(
        capsys,
        [
            "eval",
            "--dataset",
            "msrc",
            "--oracle",
            "--levels",
            "2",
            "--mode",
            "disjoint",
            "--queries-per-category",
            "5",
            "--json",
        ],
    )
    d = json.loads(out)
    assert d["settings"]["queries"] == 40 and d["settings"]["database"] == 200


# ----------------------------------------------------------------------------- subprocess + real model
def test_python_dash_m_subprocess(built, tmp_path):
    envv = dict(os.environ)
    pkg = Path(__file__).resolve().parents[1] / "python"
    envv["PYTHONPATH"] = os.pathsep.join([str(pkg), envv.get("PYTHONPATH", "")])
    r = subprocess.run(
        [sys.executable, "-m", "semcbir_fast", "info", str(built)],
        capture_output=True,
        text=True,
        env=envv,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"^images +10", r.stdout, re.MULTILINE)
    bad = tmp_path / "bad.sbsi"
    bad.write_bytes(b"nope")
    r = subprocess.run(
        [sys.executable, "-m", "semcbir_fast", "info", str(bad)],
        capture_output=True,
        text=True,
        env=envv,
        timeout=120,
        check=False,
    )
    assert r.returncode == 1 and r.stderr.startswith("semcbir info: error: cannot load index")
    assert "Traceback" not in r.stderr


VOC_APPENDED = ["bird", "cat", "cow", "dog", "horse", "sheep", "train"]


def _real_images_or_skip(tmp_path: Path, names: tuple[str, ...]) -> Path:
    from semcbir_fast._paths import data_root, models_root

    for f in ("ade20k_deeplabv3_mnv2.onnx", "ade20k_deeplabv3_mnv2.tflite",
              "deeplabv3_mnv2_pascal_quant.tflite", "voc_labels.txt"):
        if not (models_root() / f).is_file():
            pytest.skip(f"model file {f} not found")
    src = data_root() / "corel1k" / "images"
    if not all((src / n).is_file() for n in names):
        pytest.skip("Corel-1K not found")
    folder = tmp_path / "real"
    folder.mkdir()
    for name in names:
        shutil.copy(src / name, folder / name)
    return folder


def test_composite_model_index_search_info_on_real_images(tmp_path, capsys):
    """``--model ade20k+voc`` end to end; then the default (the same composite) from the
    label cache: the header carries the merged 158-class list."""
    folder = _real_images_or_skip(tmp_path, ("300.jpg", "301.jpg", "701.jpg"))  # 2 buses, a horse
    idx = tmp_path / "real.sbsi"
    rc, out, err = _run(capsys, ["index", str(folder), "-o", str(idx), "--model", "ade20k+voc",
                                 "--device", "cpu", "-q"])
    assert rc == 0, err
    assert "3 images (3 added, 0 skipped) [sbs, 158 classes, 16 blocks" in out
    rc, out, err = _run(capsys, ["info", str(idx), "--json"])
    assert rc == 0, err
    md = json.loads(out)["metadata"]
    assert md["model"] == "ade20k+voc" and len(md["class_names"]) == 158
    assert md["class_names"][151:] == VOC_APPENDED and md["class_names"][13] == "person"
    rc, out, err = _run(capsys, ["search", str(idx), str(folder / "301.jpg"), "-k", "3",
                                 "--json"])
    assert rc == 0, err
    res = json.loads(out)["queries"][0]["results"]
    assert res[0]["key"].endswith("301.jpg") and res[0]["distance"] == 0
    assert all(r["distance"] > 0 for r in res[1:])
    # a query that is not in the index is segmented with the index's (composite) model
    other = tmp_path / "q.jpg"
    shutil.copy(folder / "701.jpg", other)
    rc, out, err = _run(capsys, ["search", str(idx), str(other), "-k", "1", "--json"])
    assert rc == 0, err
    assert json.loads(out)["queries"][0]["results"][0]["key"].endswith("701.jpg")

    # no --model: the default is the composite (its label maps now come from the cache)
    from semcbir_fast.cli import DEFAULT_MODEL
    from semcbir_fast.segment import DEFAULT_SEGMENTER

    assert DEFAULT_MODEL == DEFAULT_SEGMENTER == "ade20k+voc"
    idx2 = tmp_path / "default.sbsi"
    rc, out, err = _run(capsys, ["index", str(folder), "-o", str(idx2), "--device", "cpu",
                                 "-q"])
    assert rc == 0, err
    assert "[sbs, 158 classes, 16 blocks" in out
    rc, out, _ = _run(capsys, ["info", str(idx2), "--json"])
    assert json.loads(out)["metadata"]["class_names"] == md["class_names"]


def test_default_model_without_the_voc_file_says_so(tmp_path, capsys, monkeypatch):
    """No silent fallback to the single model: the error names the missing file and
    ``--model ade20k-mnv2``."""
    folder = _real_images_or_skip(tmp_path, ("300.jpg",))
    from semcbir_fast._paths import models_root

    models = tmp_path / "models"
    models.mkdir()
    for f in models_root().glob("ade20k*"):
        (models / f.name).symlink_to(f)
    monkeypatch.setenv("SEMCBIR_MODELS", str(models))
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    idx = tmp_path / "x.sbsi"
    rc, _, err = _run(capsys, ["index", str(folder), "-o", str(idx), "--device", "cpu", "-q"])
    assert rc == 1 and not idx.exists()
    _one_error_line(err, "index")
    assert "deeplabv3_mnv2_pascal_quant.tflite" in err and "--model ade20k-mnv2" in err, err
    rc, out, err = _run(capsys, ["index", str(folder), "-o", str(idx), "--device", "cpu", "-q",
                                 "--model", "ade20k-mnv2"])
    assert rc == 0, err
    assert "[sbs, 151 classes, 16 blocks" in out


# ----------------------------------------------------------------------------- eval sbovp / hybrid
def _msrc_or_skip():
    from semcbir_fast.eval import datasets

    try:
        ds = datasets.msrc()
    except FileNotFoundError:
        pytest.skip("MSRC v1 data not found")
    if not ds.has_ground_truth:
        pytest.skip("MSRC v1 ground truth not found")
    return ds


def _kaze_or_skip() -> None:
    """The CLI's default detector; plain opencv(-python-headless) 5 builds lack it."""
    pytest.importorskip("cv2")
    from semcbir_fast.features import available_methods

    if "kaze" not in available_methods():
        pytest.skip("KAZE needs opencv-contrib-python-headless (the package's dependency)")


def test_eval_sbovp_and_hybrid_msrc_oracle_cli(capsys, tmp_path, monkeypatch):
    _msrc_or_skip()
    _kaze_or_skip()
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    base = ["eval", "--dataset", "msrc", "--oracle", "--limit", "24", "-k", "3"]
    rc, out, err = _run(
        capsys, [*base, "--signature", "sbovp", "--words", "8", "16", "--n", "2", "3"]
    )
    assert rc == 0, err
    assert "MSRC v1: 24 images, 8 categories" in out
    assert "semantic words" in out and "vocabulary fitted on the evaluated set" in out
    assert "normalize hellinger, histogram weight 1" in out and "filter off" in out
    head = next(ln for ln in out.splitlines() if ln.startswith("Setting"))
    assert [c.strip() for c in head.split("|")[1:]] == [
        "kaze L=8 n=2",
        "kaze L=8 n=3",
        "kaze L=16 n=2",
        "kaze L=16 n=3",
    ]
    row = next(ln for ln in out.splitlines() if ln.startswith("MAP MSRC v1 (oracle)"))
    maps = [float(v) for v in row.split("|")[1:]]
    assert len(maps) == 4 and all(0.6 < m <= 1 for m in maps)
    assert "P@3" in out and "ms/query" in out
    (store,) = (tmp_path / "cache" / "features").glob("kaze-*")
    assert len(list(store.glob("*/*.npz"))) == 24  # features cached, one entry per image ...

    rc, out, err = _run(capsys, [*base, "--signature", "hybrid", "--json"])
    assert rc == 0, err
    assert "features (kaze) of 24 of 24 images from the cache" in err  # ... and reused
    d = json.loads(out)
    assert d["settings"]["signature"] == "hybrid" and d["settings"]["filter"] == "eps 0.9"
    (on,) = d["results"]
    rc, out, _ = _run(capsys, [*base, "--signature", "hybrid", "--no-filter", "--json", "-q"])
    (off,) = json.loads(out)["results"]
    assert off["epsilon"] is None and 0.5 < off["map"] <= 1 and 0.5 < on["map"] <= 1

    # SPEC.md's plain form, vocabulary fitted on another folder
    vroot = tmp_path / "vocab"
    vroot.mkdir()
    src = Path(d["settings"]["root"]) / "images"
    for p in sorted(src.glob("*.jpg"))[:3]:
        shutil.copy(p, vroot / p.name)
    rc, out, err = _run(
        capsys,
        [
            *base,
            "--signature",
            "sbovp",
            "--no-semantic-words",
            "--no-filter",
            "--histogram-weight",
            "0",
            "--normalize",
            "l2",
            "--words",
            "8",
            "--vocab-root",
            str(vroot),
            "--json",
            "-q",
        ],
    )
    assert rc == 0, err
    d = json.loads(out)
    assert d["settings"]["semantic_words"] is False and d["settings"]["filter"] == "off"
    assert d["settings"]["histogram_weight"] == 0.0 and d["settings"]["normalize"] == "l2"
    assert d["settings"]["vocabulary_set"] == str(vroot.resolve())
    assert d["settings"]["fit_train_images"] == 3
    assert d["results"][0]["n_words"] == 8 and 0 < d["results"][0]["map"] <= 1


def test_eval_hybrid_report(capsys, tmp_path, monkeypatch):
    _msrc_or_skip()
    _kaze_or_skip()
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    rep = tmp_path / "r"
    argv = ["eval", "--dataset", "msrc", "--oracle", "--limit", "16", "-q", "--signature",
            "hybrid", "--report", str(rep), "--gallery-k", "4"]
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    names = {p.name for p in rep.iterdir()}
    assert {"report.md", "report.json", "map_per_setting.png", "pr_curves.png",
            "per_category_ap.png", "gallery.html", "gallery.png"} <= names
    assert "map_vs_blocks.png" not in names
    md = (rep / "report.md").read_text()
    assert md.startswith("# Hybrid signature retrieval on MSRC v1 (oracle)")
    assert "paper 001 Tables 3-4" in md and "Mseg KAZE + filter" in md
    d = json.loads((rep / "report.json").read_text())
    (res,) = d["results"]
    # the report holds the numbers the table printed
    row = next(ln for ln in out.splitlines() if ln.startswith("MAP MSRC v1 (oracle)"))
    assert abs(float(row.split("|")[1]) - res["map"]) < 1e-4
    assert d["paper"]["rows"]["Mseg KAZE + filter"] == 0.81
    html = (rep / "gallery.html").read_text()
    assert html.count("d=<b>") == 8 * 4  # one query per category, 4 results, L2 distances
    assert "d=<b>0</b>" in html  # the query itself first (query kept in the database)


def test_eval_sbovp_cli_errors(capsys, tmp_path, monkeypatch):
    _msrc_or_skip()
    _kaze_or_skip()
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    base = ["eval", "--dataset", "msrc", "--oracle", "--limit", "16", "-q"]
    rc, _, err = _run(capsys, [*base, "--signature", "sbovp", "--n", "5"])
    assert rc == 2 and "2, 3 or 4" in err
    rc, _, err = _run(capsys, [*base, "--signature", "hybrid", "--epsilon", "-1"])
    assert rc == 1 and "--epsilon" in err
    rc, _, err = _run(
        capsys, [*base, "--signature", "sbovp", "--vocab-root", str(tmp_path / "missing")]
    )
    assert rc == 1 and "--vocab-root" in err
    rc, _, err = _run(capsys, [*base, "--signature", "sbovp", "--words", "100000000"])
    assert rc == 1 and "training descriptors" in err
    _one_error_line(err, "eval")


# ----------------------------------------------------------------------------- sbovp / hybrid indexes
@pytest.mark.parametrize("signature", ["sbovp", "hybrid"])
def test_local_signature_index_search_info_gallery(env, signature, capsys, tmp_path):
    _kaze_or_skip()
    from semcbir_fast.local_index import LocalIndex

    idx = tmp_path / f"tree.{signature}"
    common = ["--model", env["model"], "--device", "cpu", "-q"]
    reds = sorted(str(p) for p in (env["tree"] / "reds").glob("*.png"))
    extra = ["--words", "4"] if signature == "sbovp" else []
    rc, out, err = _run(capsys, ["index", str(env["tree"] / "reds"), "-o", str(idx),
                                 "--signature", signature, *extra, *common])
    assert rc == 0, err
    assert f"5 images (5 added, 0 skipped) [{signature}, kaze" in out
    # --append keeps the index's signature and settings, adds only new images
    rc, out, err = _run(capsys, ["index", str(env["tree"]), str(env["junk"]), "-o", str(idx),
                                 "--append", *common])
    assert rc == 0, err
    assert "10 images (5 added, 1 skipped)" in out and "broken.jpg" in err
    index = LocalIndex.load(idx)
    assert index.signature.name == signature and len(index) == 10
    assert index.metadata["signature"] == signature and index.metadata["num_classes"] == 4
    if signature == "sbovp":
        assert index.vocabulary.n_words == 4 and index.semantic_words

    # a query in the index is looked up; a copy elsewhere is segmented: same ranking
    copy = tmp_path / "copy.png"
    shutil.copy(reds[1], copy)
    rc, out, err = _run(capsys, ["search", str(idx), reds[1], str(copy), "-k", "10", "--json",
                                 *common])
    assert rc == 0, err
    d = json.loads(out)
    assert d["signature"] == signature
    a, b = d["queries"]
    assert a["code_from"] == "index" and b["code_from"] == "segmented"
    assert [r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
    assert a["results"][0]["key"] == reds[1] and a["results"][0]["distance"] == 0.0
    assert all(isinstance(r["penalised"], bool) for r in a["results"])
    # the CLI ranking is the API's on the stored signature
    sig, hist = index.reconstruct([index.keys().index(reds[1])])
    want = index.search_signatures(sig, 10, histograms=hist)
    assert [r["id"] for r in a["results"]] == want[1][0].tolist()

    rc, out, err = _run(capsys, ["search", str(idx), reds[0], "-k", "3", *common])
    assert rc == 0 and "looked up in the index" in out and "0.0000" in out

    rc, out, err = _run(capsys, ["info", str(idx), "--json"])
    assert rc == 0, err
    info = json.loads(out)
    assert info["signature"] == signature and info["count"] == 10
    assert info["params"]["method"] == "kaze"
    # the filter is on by default for hybrid, off for sbovp (it carries the histogram)
    assert info["params"]["epsilon"] == (0.9 if signature == "hybrid" else None)
    if signature == "sbovp":
        assert info["params"]["histogram_weight"] == 1.0
        assert info["params"]["normalize"] == "hellinger"
    rc, out, err = _run(capsys, ["info", str(idx)])
    assert rc == 0 and re.search(rf"^signature +{signature}, kaze", out, re.MULTILINE)

    gal = tmp_path / "gal"
    rc, out, err = _run(capsys, ["gallery", str(idx), reds[2], "-o", str(gal), "-k", "3",
                                 "--categories", "parent", *common])
    assert rc == 0, err
    html = (gal / "gallery.html").read_text()
    assert html.count("d=<b>") == 3 and "d=<b>0</b>" in html

    # mistakes
    rc, _, err = _run(capsys, ["index", str(env["tree"]), "-o", str(idx), "--append",
                               "--signature", "sbs", *common])
    assert rc == 1 and "differs from the index's" in err
    _one_error_line(err, "index")
    rc, _, err = _run(capsys, ["index", str(env["tree"]), "-o", str(tmp_path / "x"),
                               "--signature", signature, "--levels", "2", *common])
    assert rc == 1 and "--levels applies to --signature sbs only" in err


def test_sbovp_index_with_saved_vocabulary(env, capsys, tmp_path):
    _kaze_or_skip()
    from semcbir_fast.features import extract_features
    from semcbir_fast.local_index import LocalIndex
    from semcbir_fast.sbovp import Vocabulary

    paths = sorted(str(p) for p in env["tree"].rglob("*.png"))
    vocab = Vocabulary.fit(extract_features(paths, "kaze", progress=False), 3, seed=5)
    vfile = tmp_path / "v.npz"
    vocab.save(vfile)
    idx = tmp_path / "v.sbovp"
    common = ["--model", env["model"], "--device", "cpu", "-q"]
    rc, _, err = _run(capsys, ["index", str(env["tree"]), "-o", str(idx), "--signature",
                                 "sbovp", "--vocab", str(vfile), "--no-filter", "--n", "3",
                                 *common])
    assert rc == 0, err
    index = LocalIndex.load(idx)
    np.testing.assert_array_equal(index.vocabulary.centroids, vocab.centroids)
    assert index.signature.params.n == 3 and index.epsilon is None
    assert index.metadata["vocabulary_set"] == str(vfile.resolve())
    rc, _, err = _run(capsys, ["index", str(env["tree"]), "-o", str(tmp_path / "w"),
                               "--signature", "sbovp", "--vocab", str(tmp_path / "nope.npz"),
                               *common])
    assert rc == 1 and "--vocab: no such file" in err
    rc, _, err = _run(capsys, ["index", str(env["tree"]), "-o", str(tmp_path / "w"),
                               "--signature", "sbovp", "--vocab", str(vfile), "--method", "sift",
                               *common])
    assert rc == 1 and "fitted on kaze descriptors, not sift" in err


def test_interrupted_index_resumes(env, capsys, monkeypatch):
    """An index interrupted after its first checkpoint keeps those images; rerunning the
    same command continues it (no --append needed) and gives the same index as one run."""
    from semcbir_fast import pipeline
    from semcbir_fast.index import load_index

    idx = env["base"] / "resume.sbsi"
    args = ["index", str(env["tree"]), "-o", str(idx), "--model", env["model"], "--device",
            "cpu", "-q", "--checkpoint-every", "3"]
    real = pipeline.load_inputs
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "load_inputs", flaky)
    rc, _, err = _run(capsys, args)
    assert rc == 130 and "interrupted" in err
    part = load_index(idx)
    assert len(part) == 6 and part.metadata["complete"] is False
    monkeypatch.setattr(pipeline, "load_inputs", real)
    rc, _, err = _run(capsys, args[:-3])  # same command, without -q: says it resumes
    assert rc == 0 and "resuming an interrupted run (6 images indexed)" in err
    full = load_index(idx)
    assert "complete" not in full.metadata and len(full) == 10
    one = env["base"] / "one.sbsi"
    assert main(["index", str(env["tree"]), "-o", str(one), "--model", env["model"],
                 "--device", "cpu", "-q"]) == 0
    ref = load_index(one)
    assert full.keys() == ref.keys()
    np.testing.assert_array_equal(full.reconstruct_batch(full.ids()),
                                  ref.reconstruct_batch(ref.ids()))
    rc, _, _ = _run(capsys, args)  # a complete index: re-running asks for --append
    assert rc == 1


# ----------------------------------------------------------------------------- signature table
def _cells(md: str, row: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")[1:]]


def test_eval_signature_table_matches_single_runs(env, capsys, tmp_path, monkeypatch):
    """Several signatures on two data sets in one command: every number of the Markdown
    table and of --json is the one the single-signature command gives; the published rows
    are the papers' (a per-setting row shows its best); per-category AP per data set."""
    from semcbir_fast.eval import datasets
    from semcbir_fast.signatures import get_signature

    _msrc_or_skip()
    try:
        datasets.corel1k()
    except FileNotFoundError:
        pytest.skip("Corel-1K data not found")
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    common = ["--oracle", "--limit", "20", "--model", env["model"], "--device", "cpu", "-q"]
    levels = ["--levels", "1", "2"]
    argv = ["eval", "--dataset", "msrc", "corel1k", "--signature", "sbs", "cnn", *common,
            *levels]
    rc, md, err = _run(capsys, argv)
    assert rc == 0, err
    rc, js, err = _run(capsys, [*argv, "--json"])
    assert rc == 0, err
    table = json.loads(js)
    titles = [c["title"] for c in table["columns"]]
    # --oracle: ground truth where the data set has it (MSRC), the model elsewhere
    assert titles == ["MSRC v1 (ground truth)", "Corel-1K (Wang) (model tiny-rgb)"]
    assert f"| signature | {' | '.join(titles)} |" in md
    for j, dataset in enumerate(["msrc", "corel1k"]):
        for name, labels in (("sbs", ["4 blocks", "16 blocks"]), ("cnn", ["gap"])):
            single = ["eval", "--dataset", dataset, "--signature", name, *common, "--json",
                      *(levels if name == "sbs" else [])]
            if dataset == "corel1k":
                single.remove("--oracle")
            rc, out, err = _run(capsys, single)
            assert rc == 0, err
            want = json.loads(out)["results"]
            got = next(r for r in table["columns"][j]["results"]
                       if r["settings"]["signature"] == name)["results"]
            assert [r["label"] for r in got] == [r["label"] for r in want] == labels
            for g, w in zip(got, want):
                assert g["map"] == w["map"] and g["per_category_ap"] == w["per_category_ap"]
                title = get_signature(name).title
                cell = _cells(md, f"{title}, {w['label']}")[j]
                assert cell == f"{w['map']:.3f} / {w['p_at_k']['20']:.3f} / {w['p_at_r']:.3f}"
    # published: paper 000 Table 3 gives SBS per number of blocks; the table shows the best
    rows = get_signature("sbs").published("msrc")["rows"]
    label, vals = next(iter(rows.items()))
    assert _cells(md, f"published, SBS: {label} (best)")[0] == f"{max(vals):.2f}"
    assert "Per-category AP, MSRC v1 (ground truth):" in md and "| group 1 |" in md
    assert "Per-category AP, Corel-1K (Wang) (model tiny-rgb):" in md and "africa" in md
    assert "Made by `semcbir eval --dataset msrc corel1k --signature sbs cnn" in md
    assert "- CNN, gap: cnn, efficientnet-lite0" in md


def test_eval_signature_table_errors(env, capsys):
    from semcbir_fast.cli import build_parser
    from semcbir_fast.cli.eval import _signature_classes
    from semcbir_fast.signatures import list_signatures

    base = ["eval", "--dataset", "msrc", "--oracle", "--limit", "16", "-q"]
    for extra, msg in (
        (["--signature", "all", "sbs"], "stands alone"),
        (["--signature", "sbs", "sbs"], "twice"),
        (["--signature", "sbs", "cnn", "--k1", "3"], "--signature fused only"),
        (["--signature", "sbs", "cnn", "--report", "r"], "--report takes one signature"),
    ):
        rc, _, err = _run(capsys, [*base, *extra])
        assert rc != 0 and msg in err and "Traceback" not in err, (extra, err)
    rc, _, err = _run(capsys, ["eval", "--dataset", "msrc", "corel1k", "--root", "x",
                               "--signature", "sbs", "-q"])
    assert rc != 0 and "--root names one data set" in err
    # all: every registered signature that runs with the options given (deephash needs a
    # checkpoint), named on stderr when skipped
    args = build_parser().parse_args(["eval", "--dataset", "msrc", "--signature", "all"])
    names = [c.name for c in _signature_classes(args)]
    assert "hash-model" in capsys.readouterr().err
    assert names == [n for n in list_signatures() if n != "deephash"]


def test_index_of_a_fused_signature_saves_its_re_ranking_graph(env, capsys):
    """`semcbir index --signature fused` builds the database's derived structures once and
    writes them; `--append` rebuilds them for the new database; searches read them."""
    from semcbir_fast.index import load_index

    out = env["base"] / "fused.sbdi"
    base = ["--model", env["model"], "--device", "cpu", "-q", "--signature", "fused",
            "--components", "sbs"]
    rc, _, err = _run(capsys, ["index", str(env["tree"] / "reds"), "-o", str(out), *base])
    assert rc == 0, err
    idx = load_index(out)
    assert len(idx) == 5
    assert sorted(k[0] for k in idx._derived) == ["adaptive-weights", "k-reciprocal", "stats"]
    graph = next(v for k, v in idx._derived.items() if k[0] == "k-reciprocal")
    assert graph.n == 5
    rc, _, err = _run(capsys, ["index", str(env["tree"] / "blues"), "-o", str(out), "--append",
                               *base])
    assert rc == 0, err
    idx = load_index(out)
    graph = next(v for k, v in idx._derived.items() if k[0] == "k-reciprocal")
    assert len(idx) == 10 and graph.n == 10
    # the same ranking as an index that builds everything at its first search
    fresh = idx.signature.new_index()
    fresh.add(idx.reconstruct_batch(range(10)))
    q = idx.reconstruct_batch(range(10))
    np.testing.assert_array_equal(idx.search(q, 10)[1], fresh.search(q, 10)[1])
    np.testing.assert_array_equal(idx.search(q, 10)[0], fresh.search(q, 10)[0])
