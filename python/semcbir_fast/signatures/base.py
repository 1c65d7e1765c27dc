"""What a signature is: :class:`Signature`, its :class:`Inputs` and its option metadata.

A signature kind is one class (a subclass of :class:`Signature`) registered under a name
(:mod:`semcbir_fast.signatures.registry`). It owns

- its parameters: a frozen dataclass (``Params``) with named presets (``presets()``, at
  least ``"default"``); every field may carry CLI metadata (:func:`option`), from which the
  command line builds its flags, so that defaults live in one place;
- what it needs per image (``requires``: ``"labels"`` label maps, ``"features"`` local
  features of ``feature_method``), and optional learned state (``fit``, e.g. a vocabulary);
- how it encodes a batch (``encode``) into what its index stores and searches;
- the distance it is ranked by (``distance``) and the index that holds it (``new_index``);
- how it writes itself to and reads itself from an index header (``to_header`` /
  ``from_header``), and the published numbers it is compared with (``published``).

Nothing outside the registry branches on a signature's name: callers ask the object.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._convert import check_int

__all__ = ["Inputs", "Signature", "option"]


def option(default: Any, *, flag: str | None = None, help: str = "",
           sweep: bool = False, eval_default: Any = None, from_args: Any = None,
           flags: Sequence[tuple[str, dict[str, Any]]] | None = None,
           **argparse_kw: Any) -> Any:
    """A dataclass field of a signature's ``Params`` with its command-line flag.

    ``flag`` (default ``--<field-name>``), ``help`` and any ``argparse`` keywords
    (``type``, ``choices``, ``metavar``, ``action``) describe the flag; ``sweep=True`` lets
    ``semcbir eval`` take several values (one evaluated setting per combination), starting
    from ``eval_default`` when given. A field set by several flags gives ``flags`` (a list of
    ``(flag, argparse keywords)``) and ``from_args(namespace) -> value``. A flag shared by
    several signatures (e.g. ``--method``) is declared alike in each.
    """
    meta = {"flag": flag, "help": help, "sweep": sweep, "eval_default": eval_default,
            "from_args": from_args, "flags": flags, "argparse": argparse_kw}
    return field(default=default, metadata={"cli": meta})


@dataclass
class Inputs:
    """Per-image inputs of a batch, in one order.

    Attributes
    ----------
    label_maps : list of numpy.ndarray
        ``(H, W)`` integer label maps (signatures that require ``"labels"``).
    features : list of Features, optional
        Local features (signatures that require ``"features"``).
    paths : list of str, optional
        Where the images came from (for messages).
    """

    label_maps: list[np.ndarray] = field(default_factory=list)
    features: list[Any] | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        if self.label_maps:
            return len(self.label_maps)
        return len(self.features or self.paths or [])

    def subset(self, rows: Sequence[int] | np.ndarray) -> Inputs:
        """The inputs of ``rows`` (in that order)."""
        rows = [int(r) for r in rows]
        pick = (lambda xs: None if xs is None else [xs[r] for r in rows])
        return Inputs([self.label_maps[r] for r in rows] if self.label_maps else [],
                      pick(self.features), pick(self.paths))


class Signature(ABC):
    """A signature kind bound to a label space (``num_classes``, ``ignore_index``).

    Subclasses set the class attributes and implement :meth:`encode`, :meth:`new_index`,
    :meth:`label` and :meth:`describe`; the others have defaults.

    Parameters
    ----------
    params : Params, optional
        The settings (default: the ``"default"`` preset).
    num_classes : int
        ``M`` of the label maps (values ``>= M`` are void).
    ignore_index : int, optional
        A label value treated as void.
    **overrides
        Fields of ``params`` to replace (``SBSSignature(num_classes=151, levels=3)``).
    """

    #: Registry name (``"sbs"``).
    name: ClassVar[str] = ""
    #: Human title (``"SBS"``).
    title: ClassVar[str] = ""
    #: The parameters dataclass.
    Params: ClassVar[type]
    #: Per-image inputs needed by :meth:`encode` (``"labels"``, ``"features"``).
    requires: ClassVar[tuple[str, ...]] = ("labels",)
    #: How results are ranked (for messages and docs).
    distance: ClassVar[str] = ""
    #: Results are integer distances (Hamming) or floats.
    integer_distances: ClassVar[bool] = False
    #: Title of the evaluation table's header row (its columns are the settings).
    axis: ClassVar[str] = "Setting"
    #: File name (without .png) of the report's MAP-per-setting plot.
    report_plot: ClassVar[str] = "map_per_setting"
    #: CLI flags of the learned state: (file of a saved state, folder to fit on); or None.
    state_flags: ClassVar[tuple[str, str] | None] = None
    #: What the learned state is called (index metadata ``<state_name>_set``, messages).
    state_name: ClassVar[str] = "state"

    def __init__(self, params: Any = None, *, num_classes: int,
                 ignore_index: int | None = None, **overrides: Any) -> None:
        if params is None:
            params = self.presets()["default"]
        if not isinstance(params, self.Params):
            raise ValueError(f"params must be {self.Params.__name__}, got "  # noqa: TRY004
                             f"{type(params).__name__}")
        if overrides:
            names = {f.name for f in dataclasses.fields(self.Params)}
            bad = sorted(set(overrides) - names)
            if bad:
                raise ValueError(f"{self.name} has no parameter(s) {bad}; it has {sorted(names)}")
            params = dataclasses.replace(params, **overrides)
        self.params = params
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.ignore_index = None if ignore_index is None else check_int(ignore_index,
                                                                        "ignore_index")

    # ------------------------------------------------------------------ presets
    @classmethod
    def presets(cls) -> dict[str, Any]:
        """Named parameter sets; ``"default"`` is what the CLI and evaluation use."""
        return {"default": cls.Params()}

    # ------------------------------------------------------------------ state
    @property
    def fitted(self) -> bool:
        """Whether :meth:`encode` can run (signatures without learned state: always)."""
        return True

    def fit(self, inputs: Inputs, *, threads: int = 0,
            cache: dict[Any, Any] | None = None) -> Signature:
        """Learn the state from a training set (no-op without state); returns ``self``.
        ``cache`` lets several signatures share state fitted with the same settings."""
        return self

    @property
    def fit_requires(self) -> tuple[str, ...]:
        """Per-image inputs :meth:`fit` needs of its training images (default: what
        :meth:`encode` needs, :attr:`requires`); a training set elsewhere than the indexed
        images (``build_index(fit_paths=...)``, ``semcbir index --fit-on``) is described
        with these only."""
        return tuple(self.requires)

    def require_fitted(self) -> None:
        """``ValueError`` saying what is missing when the signature is not fitted."""
        if not self.fitted:
            raise ValueError(f"signature {self.name} is not fitted (call fit or load_state)")

    def load_state(self, path: str) -> None:
        """Take learned state from a file (signatures with :attr:`state_flags`)."""
        raise ValueError(f"signature {self.name} has no state to load")

    @property
    def feature_method(self) -> str | None:
        """Local-feature method of the ``"features"`` input (None when not required)."""
        return None

    def check_available(self) -> None:
        """Raise ``ImportError`` when an optional dependency it needs is missing."""

    # ------------------------------------------------------------------ encoding
    @abstractmethod
    def encode(self, inputs: Inputs, *, threads: int = 0) -> Any:
        """Signatures of a batch: what :meth:`new_index`'s index adds and searches."""

    @abstractmethod
    def new_index(self, *, metadata: dict[str, Any] | None = None) -> Any:
        """An empty index for these signatures."""

    # ------------------------------------------------------------------ description
    @abstractmethod
    def label(self) -> str:
        """Short label of the setting (an evaluation column: ``"16 blocks"``)."""

    def column(self) -> str:
        """Column header of the setting in the evaluation table (default :meth:`label`)."""
        return self.label()

    @abstractmethod
    def describe(self) -> str:
        """One line for ``semcbir info`` / ``index``."""

    def params_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict."""
        return dataclasses.asdict(self.params)

    def result_info(self, encoded: Any) -> dict[str, Any]:
        """Extra facts of an evaluated setting: numbers (sizes, sparsity) or short text
        (a list of names), one row each in the evaluation report."""
        return {}

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        """Numbers the papers publish for this signature on ``dataset`` (may be empty):
        ``{"source": str, "rows": {row label: value or [value per setting]}}``."""
        return {}

    def published_value(self, values: Any) -> float | None:
        """This setting's entry of a published row, when the row has one per setting (as
        paper 000 Table 3 per number of blocks); None otherwise."""
        return None

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        """JSON-ready description written into an index header."""
        return {"signature": self.name, "params": self.params_dict(),
                "num_classes": self.num_classes, "ignore_index": self.ignore_index}

    def state_sections(self) -> list[tuple[str, np.ndarray]]:
        """Arrays of the learned state for the index file (none by default)."""
        return []

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> Signature:
        """Inverse of :meth:`to_header` (+ :meth:`state_sections`)."""
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        p = {k: v for k, v in (header.get("params") or {}).items() if k in fields}
        return cls(cls.Params(**p), num_classes=header["num_classes"],
                   ignore_index=header.get("ignore_index"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params}, num_classes={self.num_classes})"
