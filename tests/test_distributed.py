"""The distributed build and the Ray search backend on a local Ray cluster (2 CPUs, on
127.0.0.1, one cluster for the module, shut down at its end), with real Corel-1K images and
the default segmenter: byte-identical to the single-process build, failures recorded,
resumable after a killed actor, sharded search equal to one index on real codes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from semcbir_fast.distributed import (
    SegmenterSpec,
    ShardedIndex,
    build_sharded,
    read_manifest,
)
from semcbir_fast.index import load_index
from semcbir_fast.signatures import create_signature

DATA = Path(os.environ.get("SEMCBIR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
COREL = DATA / "corel1k" / "images"
N_IMAGES = 24


def _corel() -> list[str]:
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K not found under {COREL} (set SEMCBIR_DATA)")
    # a few of each of several categories (id // 100)
    return [str(COREL / f"{c * 100 + j}.jpg") for c in range(6) for j in range(N_IMAGES // 6)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module; workers share a fresh label-map cache."""
    cache = tmp_path_factory.mktemp("cache")
    env = {"SEMCBIR_CACHE": str(cache)}
    for k in ("SEMCBIR_MODELS", "SEMCBIR_DATA"):
        if k in os.environ:
            env[k] = os.environ[k]
    old = os.environ.get("SEMCBIR_CACHE")
    os.environ["SEMCBIR_CACHE"] = str(cache)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, runtime_env={"env_vars": env})
    # the test's helper classes travel by value (the workers cannot import this file)
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cache
    ray.shutdown()
    if old is None:
        os.environ.pop("SEMCBIR_CACHE", None)
    else:
        os.environ["SEMCBIR_CACHE"] = old


@pytest.fixture(scope="module")
def segmenter():
    try:
        from semcbir_fast.segment import load_segmenter

        return load_segmenter("ade20k-mnv2")
    except (ImportError, FileNotFoundError, ValueError, RuntimeError) as exc:
        pytest.skip(f"default segmenter unavailable: {exc}")


def _spec() -> SegmenterSpec:
    import torch

    # the label maps of the CPU path depend on torch's thread count: match this process's
    return SegmenterSpec("ade20k-mnv2", torch_threads=torch.get_num_threads())


def _codes(index):
    return index.reconstruct_batch(index.ids())


@pytest.fixture(scope="module")
def reference(cluster, segmenter):
    """The single-process build of the same images (one bad file among them)."""
    from semcbir_fast.pipeline import build_index

    bad = cluster / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    paths = _corel()
    paths.insert(5, str(bad))
    sig = create_signature("sbs", num_classes=segmenter.num_classes, levels=2)
    res = build_index(paths, sig, segmenter=segmenter, progress=False, use_cache=False)
    return paths, sig, res


@pytest.fixture(scope="module")
def built(cluster, reference, tmp_path_factory):
    paths, sig, _ = reference
    out = tmp_path_factory.mktemp("sharded") / "corel.shards"
    rep = build_sharded(paths, sig, out, segmenter=_spec(), shard_size=7, workers=2,
                        discover=False, progress=False)
    return out, rep


def test_build_is_byte_identical_to_single_process(built, reference):
    out, rep = built
    paths, _, res = reference
    m = read_manifest(out)
    assert len(m.shards) == 4 and m.count == N_IMAGES and m.inputs == N_IMAGES + 1
    assert [s.id_start for s in m.shards] == [0, 6, 13, 20]  # shard 0 lost the bad file
    assert rep.built == [0, 1, 2, 3] and rep.skipped == []
    shards = [load_index(m.shard_path(s)) for s in m.shards]
    codes = np.concatenate([_codes(s) for s in shards])
    assert codes.tobytes() == _codes(res.index).tobytes()
    assert [k for s in shards for k in s.keys()] == res.index.keys()  # noqa: SIM118
    # the unreadable file is reported, in the report and the manifest, never dropped
    assert [f for f, _ in rep.failed] == [f for f, _ in res.failed] == [paths[5]]
    assert m.failed[0]["key"] == paths[5] and m.failed[0]["shard"] == 0


def test_rerun_skips_complete_shards(built, reference):
    out, _ = built
    paths, sig, _ = reference
    before = read_manifest(out)
    rep = build_sharded(paths, sig, out, segmenter=_spec(), shard_size=7, discover=False,
                        progress=False)
    assert rep.built == [] and rep.skipped == [0, 1, 2, 3]
    assert [s.digest for s in read_manifest(out).shards] == [s.digest for s in before.shards]


@pytest.mark.parametrize("backend", ["threads", "ray"])
def test_sharded_search_equals_one_index_on_real_codes(built, reference, backend):
    out, _ = built
    _, _, res = reference
    full = res.index
    q = _codes(full)
    with ShardedIndex(out, backend=backend, workers=2) as sharded:
        for k in (1, 5, N_IMAGES, N_IMAGES + 5):
            want = full.search(q, k)
            got = sharded.search(q, k)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
        assert sharded.keys_of(got[1][3]) == full.keys_of(want[1][3])


class _Spy:
    """A named actor that collects the handles of the build actors that reach segment()."""

    def __init__(self) -> None:
        self.handles: list = []

    def register(self, handle) -> None:
        self.handles.append(handle)

    def get(self) -> list:
        return list(self.handles)


class _Stalling:
    """Segmenter wrapper: reports its actor to the spy, then stalls in segment() while the
    flag file exists (the test kills the actor there)."""

    def __init__(self, seg, flag: str) -> None:
        self._seg, self._flag = seg, flag

    def __getattr__(self, name):
        return getattr(self._seg, name)

    def iter_batches(self, *a, **kw):  # what segment_paths calls
        self._stall()
        return self._seg.iter_batches(*a, **kw)

    def segment(self, *a, **kw):
        self._stall()
        return self._seg.segment(*a, **kw)

    def _stall(self) -> None:
        if os.path.exists(self._flag):
            ray.get_actor("semcbir-test-spy").register.remote(
                ray.get_runtime_context().current_actor)
            t0 = time.time()
            while os.path.exists(self._flag) and time.time() - t0 < 60:
                time.sleep(0.1)


class _StallingSpec:
    """Picklable segmenter factory with the default model's identity (same plan digests)."""

    def __init__(self, spec: SegmenterSpec, flag: str) -> None:
        self.spec, self.flag = spec, flag

    @property
    def identity(self) -> str:
        return self.spec.identity

    def __call__(self):
        return _Stalling(self.spec(), self.flag)


def test_killed_actor_leaves_no_corrupt_shard_and_rerun_completes(cluster, reference,
                                                                    tmp_path):
    paths, sig, res = reference
    out = tmp_path / "killed.shards"
    flag = tmp_path / "stall"
    spy = ray.remote(_Spy).options(name="semcbir-test-spy").remote()
    ray.get(spy.get.remote())

    killed = []

    def killer() -> None:
        t0 = time.time()
        while time.time() - t0 < 60:
            handles = ray.get(spy.get.remote())
            if handles:
                ray.kill(handles[0], no_restart=True)
                killed.append(handles[0])
                time.sleep(0.5)
                flag.unlink(missing_ok=True)  # the other actor(s) go on
                return
            time.sleep(0.1)

    # labels of the first two shards are cached (they finish at once); the others segment
    # and one of the actors is killed inside segment()
    build_sharded(paths[:14], sig, out, segmenter=_spec(), shard_size=7, discover=False,
                  progress=False)
    (out / "manifest.json").unlink()
    flag.write_text("stall")
    t = threading.Thread(target=killer)
    t.start()
    error = None
    try:
        build_sharded(paths, sig, out, segmenter=_StallingSpec(_spec(), str(flag)),
                      shard_size=7, workers=2, discover=False, progress=False, use_cache=False)
    except RuntimeError as exc:  # the build may stop, or Ray Data may retry the shard
        error = exc
    finally:
        t.join()
        flag.unlink(missing_ok=True)
    assert killed, "no actor reached segment()"
    print("killed actor:", "the build stopped" if error else "Ray Data retried the shard")
    if error is not None:
        assert "run it again" in str(error)
        assert not (out / "manifest.json").exists()  # written last: only by a complete build
    # whatever is on disk is a complete shard: every file loads with its checksum
    for f in sorted(out.glob("shard-*.idx")):
        load_index(f, verify=True)
    rep = build_sharded(paths, sig, out, segmenter=_spec(), shard_size=7, discover=False,
                        progress=False)
    m = read_manifest(out)
    codes = np.concatenate([_codes(load_index(m.shard_path(s))) for s in m.shards])
    assert codes.tobytes() == _codes(res.index).tobytes()
    assert 0 in rep.skipped and 1 in rep.skipped
    ray.kill(spy)


def test_file_uri_inputs(cluster, reference, tmp_path):
    """A filesystem URI (here file://) is listed and fetched by the workers: same codes,
    keys are the URIs."""
    paths, sig, res = reference
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in paths[:4]:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    out = tmp_path / "uri.shards"
    rep = build_sharded([folder.as_uri()], sig, out, segmenter=_spec(), shard_size=2,
                        progress=False)
    m = read_manifest(out)
    shards = [load_index(m.shard_path(s)) for s in m.shards]
    keys = [k for s in shards for k in s.keys()]  # noqa: SIM118
    assert all(k.startswith("file://") for k in keys) and rep.failed == []
    by_name = dict(zip([Path(k).name for k in res.index.keys()], _codes(res.index)))  # noqa: SIM118
    codes = np.concatenate([_codes(s) for s in shards])
    assert codes.tobytes() == np.stack([by_name[k.rsplit("/", 1)[1]] for k in keys]).tobytes()
