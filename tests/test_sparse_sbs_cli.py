"""``--engine`` of ``semcbir index`` / ``semcbir search`` and the engine lines of ``semcbir
info``: every engine gives the same search output (tiny TorchScript model of test_cli)."""

from __future__ import annotations

import json

import pytest
from semcbir_fast.cli import main

pytest.importorskip("torch")
pytest.importorskip("cv2")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.save.*:DeprecationWarning")

from test_cli import env  # noqa: F401 - the tiny model, an image tree, a private label cache


@pytest.fixture(scope="module")
def tree(env):  # noqa: F811
    return {"model": env["model"], "folder": env["tree"], "base": env["base"]}


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _build(capsys, tree, name, *extra):
    idx = tree["base"] / name
    rc, _, err = _run(capsys, ["index", str(tree["folder"]), "-o", str(idx), "--model",
                               tree["model"], "--device", "cpu", "--overwrite", "-q", *extra])
    assert rc == 0, err
    return idx


def _info(capsys, idx):
    rc, out, err = _run(capsys, ["info", str(idx), "--json"])
    assert rc == 0, err
    return json.loads(out)


def _search(capsys, tree, idx, *extra):
    images = [str(p) for p in sorted(tree["folder"].rglob("*.png"))]
    rc, out, err = _run(capsys, ["search", str(idx), *images, "-k", "5", "--json",
                                 "--model", tree["model"], "--device", "cpu", "-q", *extra])
    assert rc == 0, err
    res = json.loads(out)
    res.pop("index")
    return res


def test_engines_build_and_search_alike(tree, capsys):
    built = {e: _build(capsys, tree, f"{e}.sbsi", "--engine", e)
             for e in ("auto", "dense", "sparse")}
    infos = {e: _info(capsys, p) for e, p in built.items()}
    assert infos["dense"]["engine"] == "dense" and infos["dense"]["engine_choice"] == "dense"
    assert infos["sparse"]["engine"] == "sparse" and infos["sparse"]["engine_choice"] == "sparse"
    assert infos["auto"]["engine_choice"] == "auto"
    # 4 classes x 16 blocks: 40-byte dense codes; the sparse rows hold 12 bytes + 2 per cell
    assert infos["dense"]["bytes_per_image"] == infos["dense"]["layout"]["stride"]
    assert infos["sparse"]["bytes_per_image"] > 12
    want = _search(capsys, tree, built["dense"])
    assert want["queries"][0]["results"][0]["distance"] == 0
    for e, p in built.items():
        assert _search(capsys, tree, p) == want, e
        for over in ("dense", "sparse", "auto"):
            assert _search(capsys, tree, p, "--engine", over) == want, (e, over)
    # the text report names the engine and the bytes per image
    rc, out, _ = _run(capsys, ["info", str(built["sparse"])])
    assert rc == 0
    assert "sparse (engine=sparse" in out and "per image" in out
    # --append --engine converts a finished index in place (nothing new to add)
    rc, _, err = _run(capsys, ["index", str(tree["folder"]), "-o", str(built["sparse"]),
                               "--append", "--engine", "dense", "-q", "--device", "cpu",
                               "--model", tree["model"]])
    assert rc == 0, err
    assert _info(capsys, built["sparse"])["engine"] == "dense"
    assert _search(capsys, tree, built["sparse"]) == want


def test_engine_refused_where_it_does_not_apply(tree, capsys):
    rc, _, err = _run(capsys, ["index", str(tree["folder"]), "-o", str(tree["base"] / "x"),
                               "--engine", "fast"])
    assert rc != 0 and "--engine" in err
    local = tree["base"] / "hybrid.idx"
    rc, _, err = _run(capsys, ["index", str(tree["folder"]), "-o", str(local),
                               "--signature", "hybrid", "--engine", "sparse", "-q"])
    assert rc != 0 and "--engine applies to SBS indexes" in err, err
    assert not local.exists()
    rc, _, err = _run(capsys, ["index", str(tree["folder"]), "-o", str(tree["base"] / "r"),
                               "--ray", "--engine", "dense"])
    assert rc != 0 and "--engine does not apply with --ray" in err, err
