"""The search page of ``semcbir serve`` in a real headless browser, end to end.

Debian's ``chromium`` driven by Playwright's Python package (``executable_path``: Playwright
cannot download its own browser here). Skips when either is missing. The server is uvicorn
on 127.0.0.1 (a free port), stopped when the test ends; the index is 30 Corel-1K images
and one copy whose file name is HTML, segmented with the tiny model of test_service.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.save.*:DeprecationWarning")

from semcbir_fast.index import load_index
from semcbir_fast.pipeline import Retriever
from semcbir_fast.service import ServiceConfig, create_app, open_service
from test_service import COREL, INDEXED, OUTSIDE, build_env, live_server

CHROMIUM = os.environ.get("SEMCBIR_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
#: A real file name that would be markup if the page put it into innerHTML.
NASTY = "<img src=x onerror=\"window.pwned=1\">&amp;'q'.jpg"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium; or set "
                    "SEMCBIR_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start here
            pytest.skip(f"{CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K not found under {COREL}")
    weird = base / "odd" / NASTY
    weird.parent.mkdir()
    shutil.copyfile(COREL / OUTSIDE, weird)
    env = build_env(base, extra=(str(weird),))
    service = open_service(env["index"], model=env["model"], device="cpu",
                           config=ServiceConfig(max_k=50))
    with live_server(create_app(service)) as url:
        yield {**env, "url": url, "weird": str(weird)}


def _expected(site, path: str, k: int, *, resegment: bool):
    res = Retriever(load_index(site["index"]), site["segmenter"]).query(
        [path], k, resegment=resegment)
    return res.ids[0].tolist(), res.distances[0].tolist(), res.keys[0]


def _rendered(page):
    return page.eval_on_selector_all("#results .hit", """els => els.map(e => ({
        id: Number(e.dataset.id),
        rank: e.querySelector('.rank').textContent,
        distance: e.querySelector('.distance').textContent,
        key: e.querySelector('.key').textContent,
        title: e.title,
        thumb: e.querySelector('img').getAttribute('src'),
    }))""")


def _wait_results(page, n: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#results .hit').length === n && "
        "!document.body.classList.contains('busy')", arg=n, timeout=30_000)


def test_upload_shows_the_library_results(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    page.goto(site["url"] + "/")
    page.wait_for_function(
        "() => document.getElementById('index-info').textContent.includes('31 images')")

    query = COREL / OUTSIDE  # the HTML-named file is a copy of it: distance 0, rank 1
    page.set_input_files("#file", str(query))
    _wait_results(page, 10)
    ids, dists, keys = _expected(site, str(query), 10, resegment=True)
    shown = _rendered(page)
    assert [r["id"] for r in shown] == ids
    assert [r["distance"] for r in shown] == [f"d = {d}" for d in dists]
    assert [r["rank"] for r in shown] == [f"#{i}" for i in range(1, 11)]
    assert [r["title"] for r in shown] == keys
    assert [r["key"] for r in shown] == [Path(k).name for k in keys]
    assert shown[0]["key"] == NASTY  # escaped: shown as text ...
    assert page.evaluate("() => window.pwned") is None  # ... never run
    assert page.locator("#results img[src='x']").count() == 0
    assert page.locator("#query-caption").text_content() == OUTSIDE
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    assert page.locator("#status").text_content().startswith("10 results by Hamming distance in")
    shot = tmp_path / "results.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # select a result with the keyboard: its id goes into the URL, its own results come
    second = shown[1]["id"]
    page.locator("#results .hit").nth(1).focus()
    page.keyboard.press("Enter")
    page.wait_for_function("id => location.hash === '#id=' + id", arg=second)
    page.wait_for_function("id => { const h = document.querySelector('#results .hit'); "
                           "return h !== null && h.dataset.id === String(id); }", arg=second)
    _wait_results(page, 10)
    key2 = keys[1]
    ids2, _, _ = _expected(site, key2, 10, resegment=False)
    assert [r["id"] for r in _rendered(page)] == ids2
    assert page.locator("#query-caption").text_content() == Path(key2).name

    # one more result, then Back: the previous indexed image's results again
    third = ids2[2]
    page.locator("#results .hit").nth(2).click()
    page.wait_for_function("id => location.hash === '#id=' + id", arg=third)
    _wait_results(page, 10)
    page.go_back()
    page.wait_for_function("id => location.hash === '#id=' + id", arg=second)
    page.wait_for_function("id => { const h = document.querySelector('#results .hit'); "
                           "return h !== null && h.dataset.id === String(id); }", arg=second)
    _wait_results(page, 10)
    assert [r["id"] for r in _rendered(page)] == ids2

    # change k: the same query again with 4 results
    page.fill("#k", "4")
    page.keyboard.press("Enter")
    _wait_results(page, 4)
    assert [r["id"] for r in _rendered(page)] == ids2[:4]

    # a bad k is refused in the page, without a request
    page.fill("#k", "0")
    page.keyboard.press("Enter")
    assert "whole number from 1 to 50" in page.locator("#status").text_content()
    assert not errors, errors


def test_bad_file_and_phone_layout(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True,
                            has_touch=True)
    page.goto(site["url"] + "/")
    page.wait_for_function("() => document.getElementById('index-info').textContent.length > 0")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    page.set_input_files("#file", str(text))
    page.wait_for_function("() => document.getElementById('status').classList.contains('error')")
    assert "not a JPEG" in page.locator("#status").text_content()

    page.set_input_files("#file", str(COREL / INDEXED[12]))
    _wait_results(page, 10)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    box = page.locator("#results .hit").first.bounding_box()
    assert box is not None and box["width"] < 390 / 1.9  # at least two columns on a phone
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
