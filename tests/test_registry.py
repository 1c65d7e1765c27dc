"""The signature registry is open: a toy signature defined here, and registered, runs
through encoding, the index family (add, search, save, load_index), the Retriever, the
evaluation and the ``semcbir eval`` command without any change to another module."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from semcbir_fast import Inputs, create_signature, list_signatures, load_index
from semcbir_fast.cli import main
from semcbir_fast.eval.evaluate import evaluate
from semcbir_fast.pipeline import Retriever
from semcbir_fast.signatures import LocalSignature, option, register_signature, unregister_signature


@dataclass
class ToyBatch:
    """CSR rows (the class histogram) with the histograms themselves."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    cols: int
    histograms: np.ndarray

    def __len__(self) -> int:
        return self.indptr.size - 1

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.cols)

    def __getitem__(self, rows: Any) -> ToyBatch:
        rows = np.atleast_1d(np.arange(len(self))[rows])
        dense = self.dense()[rows]
        return ToyBatch.from_dense(dense, self.histograms[rows])

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.cols), np.float32)
        out[np.repeat(np.arange(len(self)), np.diff(self.indptr)), self.indices] = self.data
        return out

    @classmethod
    def from_dense(cls, dense: np.ndarray, hist: np.ndarray) -> ToyBatch:
        r, c = np.nonzero(dense)
        indptr = np.zeros(dense.shape[0] + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=dense.shape[0]), out=indptr[1:])
        return cls(indptr, c.astype(np.int64), dense[r, c].astype(np.float32), dense.shape[1],
                   hist.astype(np.float32))


@dataclass(frozen=True)
class ToyParams:
    scale: float = option(2.0, type=float, flag="--toy-scale", help="toy: row scale")
    epsilon: float | str | None = None


class ToySignature(LocalSignature):
    """Toy: the class histogram times a scale, ranked by L2."""

    name = "toy"
    title = "Toy"
    Params = ToyParams
    requires = ("labels",)

    @property
    def feature_method(self) -> None:  # type: ignore[override]
        return None

    def check_available(self) -> None:
        pass

    def columns(self) -> int:
        return self.num_classes

    def encode(self, inputs: Inputs, *, threads: int = 0) -> ToyBatch:
        h = self.histograms(list(inputs.label_maps))
        return ToyBatch.from_dense(h * self.params.scale, h)

    def batch_arrays(self, batch: Any, histograms: Any, name: str, columns: int) -> Any:
        return batch.indptr, batch.indices, batch.data, batch.histograms, self.num_classes

    def batch_from_rows(self, indptr: Any, indices: Any, data: Any, histograms: Any,
                        columns: int) -> ToyBatch:
        return ToyBatch(indptr, indices, data, self.num_classes, histograms)

    def label(self) -> str:
        return f"toy x{self.params.scale:g}"

    def describe(self, columns: int = -1) -> str:
        return f"toy, {self.num_classes} classes, scale {self.params.scale:g}"

    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        h["params"]["scale"] = self.params.scale
        return h

    @classmethod
    def from_header(cls, header: dict[str, Any], arrays: Any = None) -> ToySignature:
        p = header["params"]
        return cls(ToyParams(scale=p["scale"], epsilon=p["epsilon"]),
                   num_classes=p["num_classes"], ignore_index=p.get("ignore_index"))


@pytest.fixture()
def toy():
    register_signature(ToySignature)
    try:
        yield ToySignature
    finally:
        unregister_signature("toy")


def _brute(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - db[None]) ** 2).sum(-1))
    order = np.lexsort((np.broadcast_to(np.arange(db.shape[0]), d.shape), d), axis=1)[:, :k]
    return np.take_along_axis(d, order, axis=1), order


def test_toy_signature_index_search_eval(toy, msrc_labels, tmp_path, capsys):
    assert "toy" in list_signatures()
    maps = msrc_labels[:40]
    sig = create_signature("toy", num_classes=14, ignore_index=0, scale=3.0)
    enc = sig.encode(Inputs(maps))
    index = sig.new_index(metadata={"note": "toy"})
    keys = [str(tmp_path / f"img{i}.png") for i in range(len(maps))]
    index.add(enc, keys=keys)
    d, i = index.search(enc[np.arange(5)], 7)
    want_d, want_i = _brute(enc.dense()[:5], enc.dense(), 7)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-5, atol=1e-6)
    # the file round trip goes through the registry by name
    index.save(tmp_path / "toy.idx")
    back = load_index(tmp_path / "toy.idx")
    assert type(back.signature) is ToySignature and back.signature.params.scale == 3.0
    for a, b in zip(back.search(enc[np.arange(5)], 7), (d, i)):
        np.testing.assert_array_equal(a, b)
    # the Retriever looks indexed queries up without a segmenter
    hits = Retriever(back).query(keys[:3], k=4)
    np.testing.assert_array_equal(hits.ids, want_i[:3, :4])
    assert hits.source == ["index"] * 3 and hits.keys[0][0] == keys[0]
    # evaluation: one setting per signature object, scored like every other kind
    from semcbir_fast.eval import load_dataset

    ds = load_dataset("msrc").limit(40)
    name_to_map = dict(zip(load_dataset("msrc").images, msrc_labels))
    dmaps = [name_to_map[p] for p in ds.images]
    res = evaluate(ds, [sig, create_signature("toy", num_classes=14, ignore_index=0)],
                   label_maps=dmaps)
    assert [r.label for r in res.results] == ["toy x3", "toy x2"]
    # scaling every row leaves the ranking, hence MAP, unchanged
    assert res.results[0].map == pytest.approx(res.results[1].map)
    assert res.settings["signature"] == "toy" and res.settings["scale"] == [3.0, 2.0]
    # ... and the command line offers it, with its own option
    rc = main(["eval", "--dataset", "msrc", "--oracle", "--limit", "16", "--signature", "toy",
               "--toy-scale", "5", "-k", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "toy x5" in out and "MAP MSRC v1 (oracle)" in out


def test_registry_errors(toy):
    from semcbir_fast.signatures import get_signature

    with pytest.raises(ValueError, match="unknown signature 'nope'"):
        get_signature("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_signature(type("Other", (ToySignature,), {"name": "toy"}))
    with pytest.raises(ValueError, match="no preset 'spec'"):
        create_signature("toy", "spec", num_classes=3)
    with pytest.raises(ValueError, match="has no parameter"):
        create_signature("toy", num_classes=3, levels=2)
    assert dataclasses.replace(create_signature("sbovp", "spec", num_classes=3).params,
                               seed=0).semantic_words is False
