"""``semcbir serve``: the HTTP API through FastAPI's TestClient, on real Corel-1K images.

An index of 30 Corel-1K images is built with a tiny TorchScript segmenter (a 1x1
convolution labelling pixels red / green / blue / dark, so that segmenting is instant);
every answer of the service is checked against the library's own search
(:class:`semcbir_fast.pipeline.Retriever`) for the same query. Bad input of every kind must
give a 4xx with a one-line reason, never a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # TestClient
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.save.*:DeprecationWarning")

with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2 and warns about httpx
    warnings.filterwarnings("ignore", message=".*httpx.*deprecated")
    from fastapi.testclient import TestClient
from helpers import make_tiny_model
from semcbir_fast import create_signature
from semcbir_fast._paths import data_root
from semcbir_fast.cli import main
from semcbir_fast.cli.serve import allowed_hosts
from semcbir_fast.imagesize import probe_image
from semcbir_fast.index import load_index
from semcbir_fast.pipeline import Retriever, build_index
from semcbir_fast.service import ServiceConfig, create_app, open_service
from semcbir_fast.service.app import host_name

COREL = Path(data_root()) / "corel1k" / "images"
#: 3 images of each of the 10 Corel-1K categories (ids c*100 + 0, 1, 2)
INDEXED = [f"{c * 100 + j}.jpg" for c in range(10) for j in range(3)]
OUTSIDE = "350.jpg"  # a query that is not in the index


def build_env(base: Path, *, signature: str = "sbs", extra: tuple[str, ...] = ()) -> dict:
    """Tiny model + an index of the 30 :data:`INDEXED` Corel-1K images and the files
    ``extra`` (skips without the data). The index records the model's *path* (as
    ``semcbir index --model FILE`` does)."""
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K not found under {COREL} (set SEMCBIR_DATA)")
    from semcbir_fast.segment import load_segmenter

    model = make_tiny_model(base / "model" / "tiny-rgb.pt")
    seg = load_segmenter(str(model), device="cpu")
    kw = {"levels": 2} if signature == "sbs" else {"method": "orb"}
    sig = create_signature(signature, num_classes=seg.num_classes, **kw)
    paths = [str(COREL / n) for n in INDEXED] + list(extra)
    built = build_index(paths, sig, segmenter=seg, progress=False, use_cache=False,
                        metadata={"model": str(model), "model_name": "tiny-rgb",
                                  "num_classes": 4, "signature": signature})
    out = base / f"corel30.{signature}"
    built.index.save(out)
    return {"base": base, "model": str(model), "index": out, "segmenter": seg}


@contextlib.contextmanager
def live_server(app):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields its URL and
    stops the server on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_env(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def service(env):
    return open_service(env["index"], model=env["model"], device="cpu",
                        config=ServiceConfig(max_upload_bytes=1 << 20, max_pixels=2_000_000,
                                             max_k=50, workers=4))


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def _upload(client, data: bytes, name: str = "q.jpg", **fields):
    return client.post("/search", files={"image": (name, data, "image/jpeg")},
                       data={k: str(v) for k, v in fields.items()})


def _library(env, path: str, k: int, *, resegment: bool):
    index = load_index(env["index"])
    res = Retriever(index, env["segmenter"]).query([path], k, resegment=resegment)
    return res.ids[0].tolist(), res.distances[0].tolist(), res.keys[0]


def _check_equal(body: dict, ids, dists, keys) -> None:
    got = body["results"]
    assert [r["id"] for r in got] == ids
    assert [r["distance"] for r in got] == dists
    assert [r["key"] for r in got] == keys
    assert [r["rank"] for r in got] == list(range(1, len(ids) + 1))


def _one_line_4xx(resp, status: int, match: str) -> None:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    assert match.lower() in detail.lower(), detail


# ----------------------------------------------------------------------------- results
@pytest.mark.parametrize("name", [INDEXED[4], OUTSIDE])
def test_upload_equals_library_search(env, client, name):
    path = str(COREL / name)
    r = _upload(client, Path(path).read_bytes(), name, k=8)
    assert r.status_code == 200, r.text
    body = r.json()
    _check_equal(body, *_library(env, path, 8, resegment=True))
    assert body["query"] == {"upload": name, "format": "JPEG", "width": 384, "height": 256} \
        or body["query"]["width"] * body["query"]["height"] == 384 * 256
    assert {"decode_ms", "segment_ms", "encode_ms", "search_ms", "total_ms"} <= set(
        body["timings"])
    if name in INDEXED:  # the image itself comes first, at distance 0
        assert body["results"][0]["key"] == path and body["results"][0]["distance"] == 0


def test_search_by_id_equals_library_search(env, client, service):
    index = load_index(env["index"])
    i = 13
    key = index.keys_of([i])[0]
    ids, dists, keys = _library(env, key, 10, resegment=False)  # looked up in the index
    for req in ({"data": {"id": str(i), "k": "10"}},              # url-encoded form
                {"files": {"id": (None, str(i)), "k": (None, "10")}},   # multipart
                {"json": {"id": i, "k": 10}}):                    # JSON
        r = client.post("/search", **req)
        assert r.status_code == 200, r.text
        body = r.json()
        _check_equal(body, ids, dists, keys)
        assert body["query"] == {"id": i, "key": key}
        assert body["results"][0]["id"] == i and body["results"][0]["distance"] == 0


def test_k_default_max_distance_and_k_above_count(client, service):
    r = client.post("/search", json={"id": 0})
    assert r.status_code == 200 and len(r.json()["results"]) == service.config.default_k
    full = client.post("/search", json={"id": 0, "k": 50}).json()["results"]
    assert len(full) == 30  # k > count: the padding is not shown
    cut = full[5]["distance"]
    near = client.post("/search", json={"id": 0, "k": 50, "max_distance": cut}).json()
    assert near["results"] == [r for r in full if r["distance"] <= cut]


def test_info_healthz_random(client, service):
    info = client.get("/info").json()
    assert info["count"] == 30 and info["signature"] == "sbs" and info["has_images"]
    assert info["model"] == "tiny-rgb" and info["uploads"] is True
    assert info["options"]["k"] == {"min": 1, "max": 50, "default": 10}
    assert info["limits"]["max_upload_bytes"] == 1 << 20
    assert info["limits"]["formats"] == ["JPEG", "PNG", "WebP", "BMP"]
    assert client.get("/healthz").json() == {"status": "ok", "count": 30}
    ids = {client.get("/random").json()["id"] for _ in range(20)}
    assert ids <= set(service.index.ids().tolist()) and len(ids) > 1


def test_images_and_thumbs_are_the_index_files(env, client, service):
    key = service.index.keys_of([7])[0]
    r = client.get("/images/7")
    assert r.status_code == 200 and r.content == Path(key).read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    t = client.get("/thumbs/7")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    thumb = cv2.imdecode(np.frombuffer(t.content, np.uint8), cv2.IMREAD_COLOR)
    assert max(thumb.shape[:2]) == service.config.thumb_size
    assert client.get("/thumbs/7").content == t.content  # cached


@pytest.mark.parametrize("path", [
    "/images/30", "/images/999999", "/thumbs/31", "/images/-1", "/images/abc",
    "/images/..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd", "/images/1.5",
    "/images/99999999999999999999999", "/thumbs/0x1", "/thumbs/%00",
])
def test_images_name_nothing_outside_the_index(client, path):
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert "root:" not in r.text
    if r.headers.get("content-type", "").startswith("application/json"):
        assert "\n" not in r.json()["detail"]


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert '<script src="static/app.js"' in r.text and "http" not in r.text.split("<body>")[0]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "innerHTML" not in js.text.replace(
        "never into innerHTML", "")
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/../engine.py").status_code == 404
    assert client.get("/docs").status_code == 404  # no CDN-backed docs page


# ----------------------------------------------------------------------------- bad input
def _png(h: int, w: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))
    assert ok
    return buf.tobytes()


def _fake_png_header(w: int, h: int) -> bytes:
    """A PNG signature and IHDR that declare ``w x h`` (no pixel data at all)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_bad_uploads_give_one_line_4xx(client):
    jpg = (COREL / OUTSIDE).read_bytes()
    _one_line_4xx(_upload(client, b"hello, I am text"), 415, "not a JPEG")
    _one_line_4xx(_upload(client, b""), 400, "empty")
    _one_line_4xx(_upload(client, jpg[: len(jpg) // 2]), 422, "corrupt or truncated")
    _one_line_4xx(_upload(client, jpg[:200]), 422, "corrupt or truncated")
    _one_line_4xx(_upload(client, jpg[:3]), 415, "cut short")
    broken = bytearray(jpg)
    broken[600:4000] = b"\x00" * 3400
    r = _upload(client, bytes(broken))
    assert r.status_code in (200, 422)  # damaged scan data may still decode
    _one_line_4xx(_upload(client, _fake_png_header(40_000, 40_000)), 413, "1,600,000,000 pixels")
    _one_line_4xx(_upload(client, _png(1500, 1500)), 413, "limit is 2,000,000")
    _one_line_4xx(_upload(client, _png(64, 64) + b"\x00" * (1 << 20)), 413, "upload too large")
    ok = _upload(client, _png(64, 64), "tiny.png")
    assert ok.status_code == 200 and ok.json()["query"]["format"] == "PNG"


def test_upload_limit_is_checked_while_streaming(service):
    """A chunked body (no Content-Length) is answered 413 once it passes the limit, while
    the client is still sending: a real server on 127.0.0.1 and a raw socket."""
    with live_server(create_app(service)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            head = (b'--xyz\r\nContent-Disposition: form-data; name="image"; '
                    b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n' + _png(8, 8))
            chunk = b"\x00" * (64 << 10)
            sent = 0
            s.settimeout(0.0)
            reply = b""
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
                for _ in range(256):  # up to 16 MiB, far past the 1 MiB limit
                    try:
                        reply += s.recv(65536)
                    except BlockingIOError:
                        pass
                    if reply:
                        break
                    s.settimeout(5)
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    s.settimeout(0.0)
                    sent += len(chunk)
                    time.sleep(0.002)
            except OSError:  # the server closed the connection while we were sending
                pass
            s.settimeout(5)
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                    more = s.recv(65536)
                    if not more:
                        break
                    reply += more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"upload too large" in reply
    assert sent < 4 << 20, sent  # answered long before the client was done
    print(f"413 after {sent / (1 << 20):.2f} MiB sent")


def test_content_length_over_limit_is_refused_before_reading(client):
    r = client.post("/search", content=b"x" * 10,
                    headers={"content-type": "multipart/form-data; boundary=b",
                             "content-length": str(50 << 20)})
    _one_line_4xx(r, 413, "upload too large")


@pytest.mark.parametrize("fields, status, match", [
    ({"id": "0", "k": "0"}, 400, "k must be an integer in [1, 50]"),
    ({"id": "0", "k": "51"}, 400, "k must be an integer in [1, 50]"),
    ({"id": "0", "k": "ten"}, 400, "got 'ten'"),
    ({"id": "0", "k": "1.5"}, 400, "k must be"),
    ({"id": "0", "k": "²"}, 400, "k must be"),
    ({"id": "0", "k": "9" * 400}, 400, "k must be"),
    ({"id": "0", "max_distance": "-1"}, 400, "max_distance must be a number"),
    ({"id": "0", "max_distance": "nan"}, 400, "max_distance must be a number"),
    ({"id": "30"}, 404, "no image with id 30"),
    ({"id": "-3"}, 400, "id must be an integer"),
    ({"id": "../../etc/passwd"}, 400, "id must be an integer"),
    ({"id": "99999999999999999999"}, 400, "id must be an integer"),
    ({"k": "3"}, 400, "give an image"),
    ({"id": "1", "path": "/etc/passwd"}, 400, "never a path"),
    ({"id": "1", "color": "red"}, 400, "unknown field"),
])
def test_bad_fields_give_one_line_4xx(client, fields, status, match):
    _one_line_4xx(client.post("/search", data=fields), status, match)


def test_bad_requests_give_one_line_4xx(client):
    jpg = (COREL / OUTSIDE).read_bytes()
    _one_line_4xx(client.post("/search", files={"image": ("a.jpg", jpg)}, data={"id": "1"}),
                  400, "not both")
    _one_line_4xx(client.post("/search", files={"photo": ("a.jpg", jpg)}), 400,
                  "send the image as field 'image'")
    _one_line_4xx(client.post("/search", files=[("image", ("a.jpg", jpg)),
                                                ("image", ("b.jpg", jpg))]), 400, "")
    _one_line_4xx(client.post("/search", content=b"{not json",
                              headers={"content-type": "application/json"}), 400, "not valid JSON")
    _one_line_4xx(client.post("/search", json=[1, 2]), 400, "must be an object")
    _one_line_4xx(client.post("/search", json={"id": True}), 400, "id must be an integer")
    _one_line_4xx(client.post("/search", files={"image": (None, "text")}), 400,
                  "must be a file part")
    _one_line_4xx(client.post("/search", json={"id": 1, "max_distance": 10 ** 400}), 400,
                  "max_distance must be a number")
    _one_line_4xx(client.post("/search", json={"id": [1], "k": {"a": 1}}), 400, "k must be")
    _one_line_4xx(client.post("/search", json={"id": 1.0}), 400, "id must be an integer")
    _one_line_4xx(client.post("/search", content=jpg, headers={"content-type": "image/jpeg"}),
                  415, "multipart/form-data")
    _one_line_4xx(client.post("/search", content=b"--x\r\nbroken",
                              headers={"content-type": "multipart/form-data"}), 400, "")
    assert client.get("/search").status_code == 405
    assert client.get("/nothing-here").status_code == 404


def test_rebinding_host_is_refused(service):
    cfg = ServiceConfig(allowed_hosts=("127.0.0.1", "localhost"))
    from semcbir_fast.service import SearchService

    svc = SearchService(service.index, service.segmenter, config=cfg)
    with TestClient(create_app(svc), base_url="http://evil.example") as c:
        _one_line_4xx(c.get("/info"), 400, "host 'evil.example' is not served here")
        assert c.get("/").headers["x-frame-options"] == "DENY"
    with TestClient(create_app(svc), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/info").status_code == 200
    svc6 = SearchService(service.index, None, config=ServiceConfig(
        allowed_hosts=allowed_hosts("::1", None)))
    with TestClient(create_app(svc6), base_url="http://[::1]:8000") as c:
        assert c.get("/healthz").status_code == 200
    assert host_name("[::1]:8000") == "[::1]" and host_name("LocalHost:80") == "localhost"
    assert allowed_hosts("0.0.0.0", None) is None
    assert allowed_hosts("0.0.0.0", ["photos.lan"]) == ("photos.lan",)


def test_no_model_serves_ids_only(env):
    svc = open_service(env["index"], no_model=True)
    with TestClient(create_app(svc)) as c:
        assert c.get("/info").json()["uploads"] is False
        assert c.post("/search", json={"id": 2, "k": 3}).status_code == 200
        _one_line_4xx(_upload(c, (COREL / OUTSIDE).read_bytes()), 409, "without a model")


def test_signatures_that_read_files_take_ids_only(service):
    """A signature that needs image files ("images", e.g. CNN descriptors) cannot encode
    a decoded upload here: 409 with the reason, /info says so, ids still work."""
    import copy

    from semcbir_fast.service import SearchService

    svc = SearchService(service.index, service.segmenter, config=service.config)
    sig = copy.copy(svc.signature)
    sig.requires = ("images", "labels")
    svc.signature = sig
    with TestClient(create_app(svc)) as c:
        assert c.get("/info").json()["uploads"] is False
        _one_line_4xx(_upload(c, (COREL / OUTSIDE).read_bytes()), 409,
                      "need image files: images")
        assert c.post("/search", json={"id": 2, "k": 3}).status_code == 200


# ----------------------------------------------------------------------------- threads
def test_concurrent_requests_share_the_model_and_index(env, client):
    """16 threads at once, uploads and ids mixed: every answer equals the library's."""
    names = [INDEXED[1], OUTSIDE, INDEXED[20], "777.jpg"]
    want = {n: _library(env, str(COREL / n), 5, resegment=True) for n in names}
    want_id = _library(env, str(COREL / INDEXED[9]), 5, resegment=False)
    errors: list[str] = []

    def worker(j: int) -> None:
        try:
            for t in range(4):
                if (j + t) % 2:
                    n = names[(j + t) % len(names)]
                    r = _upload(client, (COREL / n).read_bytes(), n, k=5)
                    got, exp = r.json(), want[n]
                else:
                    r = client.post("/search", json={"id": 9, "k": 5})
                    got, exp = r.json(), want_id
                assert r.status_code == 200, r.text
                _check_equal(got, *exp)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_busy_server_answers_503(service):
    cfg = ServiceConfig(max_pending=1, workers=1)
    from semcbir_fast.service import SearchService

    svc = SearchService(service.index, service.segmenter, config=cfg)
    gate, entered = threading.Event(), threading.Event()
    real = svc.search_id

    def slow(id, **kw):
        if id == 1:  # the first request holds the only slot until the gate opens
            entered.set()
            gate.wait(10)
        return real(id, **kw)

    svc.search_id = slow  # type: ignore[method-assign]
    with TestClient(create_app(svc)) as c:
        first: list = []
        t = threading.Thread(target=lambda: first.append(c.post("/search", json={"id": 1})))
        t.start()
        assert entered.wait(10)
        r = c.post("/search", json={"id": 2})
        gate.set()
        t.join(10)
        assert c.post("/search", json={"id": 2}).status_code == 200  # free again
    _one_line_4xx(r, 503, "busy")
    assert r.headers["retry-after"] == "1" and first[0].status_code == 200


# ----------------------------------------------------------------------------- sparse
def test_hybrid_index_upload_equals_library(tmp_path):
    pytest.importorskip("cv2").ORB_create  # noqa: B018
    e = build_env(tmp_path, signature="hybrid")
    svc = open_service(e["index"], model=e["model"], device="cpu")
    path = str(COREL / OUTSIDE)
    with TestClient(create_app(svc)) as c:
        r = _upload(c, Path(path).read_bytes(), k=6)
        assert r.status_code == 200, r.text
        body = r.json()
        index = load_index(e["index"])
        res = Retriever(index, e["segmenter"]).query([path], 6, resegment=True)
        assert [x["id"] for x in body["results"]] == res.ids[0].tolist()
        np.testing.assert_allclose([x["distance"] for x in body["results"]],
                                   res.distances[0], rtol=1e-6)
        assert [x["penalised"] for x in body["results"]] == res.penalised[0].tolist()
        assert "features_ms" in body["timings"] and body["distance"] == index.signature.distance
        assert c.post("/search", json={"id": 3, "k": 4}).json()["results"][0]["id"] == 3


# ----------------------------------------------------------------------------- CLI
def test_cli_serve_builds_the_app(env, monkeypatch, capsys):
    import uvicorn

    seen = {}

    def fake_run(app, **kw):
        seen.update(kw, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    rc = main(["serve", str(env["index"]), "--model", env["model"], "--device", "cpu",
               "--port", "8123", "--max-k", "20"])
    assert rc == 0, capsys.readouterr().err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8123/" in err and "30 images" in err
    with TestClient(seen["app"], base_url="http://localhost:8123") as c:
        assert c.get("/info").json()["options"]["k"]["max"] == 20
        assert c.post("/search", json={"id": 0, "k": 21}).status_code == 400
    with TestClient(seen["app"], base_url="http://attacker.example") as c:
        assert c.get("/info").status_code == 400


@pytest.mark.parametrize("argv, match", [
    (["--model", "/no/such/model.pt"], "no/such/model.pt"),
    ([], "records the model file"),   # a path recorded in the index is never loaded
    (["--max-upload-mb", "0"], "positive integer"),
    (["--port", "70000"], "port"),
])
def test_cli_serve_user_mistakes(env, monkeypatch, capsys, argv, match):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not serve"))
    rc = main(["serve", str(env["index"]), *argv])
    err = capsys.readouterr().err
    assert rc in (1, 2) and match in err and "Traceback" not in err


def test_cli_serve_missing_index(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.sbsi")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("semcbir serve: error:") and "\n" not in err


# ----------------------------------------------------------------------------- headers
def test_probe_image_reads_sizes_without_decoding():
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".jpg", ".png", ".webp", ".bmp"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        head = probe_image(buf.tobytes())
        assert head is not None and (head.width, head.height) == (53, 37), ext
    ok, lossless = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert probe_image(lossless.tobytes()).width == 53
    progressive = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert probe_image(progressive).height == 37
    real = (COREL / OUTSIDE).read_bytes() if COREL.is_dir() else None
    if real:
        h = probe_image(real)
        assert (h.format, h.pixels) == ("JPEG", 384 * 256)
    for junk in (b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b"BM",
                 b"GIF89a" + bytes(20), _fake_png_header(0, 5), io.BytesIO(b"x").read()):
        assert probe_image(junk) is None
    assert probe_image(_fake_png_header(7, 9)).pixels == 63
    assert json.dumps(probe_image(_fake_png_header(7, 9)).__dict__)
