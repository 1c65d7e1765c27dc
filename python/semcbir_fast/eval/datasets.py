"""Retrieval data sets: images, their categories and (optionally) ground-truth label maps.

Three layouts are understood (paper 000 section 4.1.2 and ``shared/data/README.md``):

- **Corel-1K / Wang** (:func:`corel1k`): ``images/<id>.jpg``, ``category = id // 100``;
  category names from ``labels.csv`` (``filename,class_id,class_name``) when present.
- **MSRC** (:func:`msrc`): ``images/<group>_<k>_s.jpg``, ``category = int(name.split('_')[0])``;
  pixel ground truth ``labels/<stem>.png`` (class indices, or colours listed in
  ``classes.txt`` as ``index<TAB>name<TAB>r,g,b``; class 0 "void" is ignored), usable
  instead of a model ("oracle" segmentation).
- **Folder per category** (:func:`folders`): every sub-folder of the root is a category
  and holds its images (searched recursively).

Images are listed in natural order (``2.jpg`` before ``10.jpg``); the position in that list
is the image's id in the database, which is also how tied distances are ordered.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "corel1k",
    "find_images",
    "folders",
    "load_dataset",
    "msrc",
    "natural_key",
    "split_disjoint",
]

#: File name endings taken as images (case-insensitive).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".jp2",
    ".pgm",
    ".ppm",
)


def natural_key(s: str) -> list[Any]:
    """Sort key that orders digit runs numerically: ``"img2" < "img10"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def find_images(
    root: str | os.PathLike[str],
    *,
    recursive: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """Image files under ``root`` (hidden files and folders skipped), in natural order.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} does not exist or is not a folder")
    exts = tuple(e.lower() for e in extensions)
    out: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                if not fn.startswith(".") and fn.lower().endswith(exts):
                    out.append(Path(dirpath) / fn)
    else:
        out = [
            p
            for p in base.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(exts)
        ]
    out.sort(key=lambda p: natural_key(p.relative_to(base).as_posix()))
    return out


@dataclass
class Dataset:
    """Images with categories, optionally with ground-truth label maps.

    Attributes
    ----------
    name : str
        ``"corel1k"``, ``"msrc"``, ``"folders"`` or a user name.
    root : pathlib.Path
    images : list of pathlib.Path
        The images; the position is the database id.
    categories : numpy.ndarray
        int64 ``(len(images),)`` category of each image.
    category_names : dict
        ``{category: display name}``.
    label_maps : list of pathlib.Path, optional
        Ground-truth label map of each image (oracle segmentation), same order.
    label_classes : list of str, optional
        Names of the ground-truth classes (index = value in the maps).
    label_colors : list of (r, g, b), optional
        Display colour of each ground-truth class.
    ignore_index : int, optional
        Ground-truth value that means "no class" (void).
    """

    name: str
    root: Path
    images: list[Path]
    categories: np.ndarray
    category_names: dict[int, str] = field(default_factory=dict)
    label_maps: list[Path] | None = None
    label_classes: list[str] | None = None
    label_colors: list[tuple[int, int, int]] | None = None
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        self.categories = np.asarray(self.categories, dtype=np.int64).reshape(-1)
        if self.categories.shape[0] != len(self.images):
            raise ValueError(
                f"categories must have one entry per image: {len(self.images)} images, "
                f"{self.categories.shape[0]} categories"
            )
        if self.label_maps is not None and len(self.label_maps) != len(self.images):
            raise ValueError(
                f"label_maps must have one entry per image: {len(self.images)} images, "
                f"{len(self.label_maps)} label maps"
            )
        for c in np.unique(self.categories).tolist():
            self.category_names.setdefault(int(c), str(c))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_ground_truth(self) -> bool:
        """Whether ground-truth label maps are available (oracle evaluation)."""
        return self.label_maps is not None

    def category_name(self, c: int) -> str:
        return self.category_names.get(int(c), str(c))

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The images at ``indices`` (in that order)."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        return replace(
            self,
            images=[self.images[i] for i in idx],
            categories=self.categories[idx],
            category_names=dict(self.category_names),
            label_maps=None if self.label_maps is None else [self.label_maps[i] for i in idx],
        )

    def limit(self, n: int) -> Dataset:
        """At most ``n`` images, spread evenly over the categories (first images of each,
        taken round-robin), in the original order. A plain prefix would keep one category.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"limit must be an int >= 1, got {n!r}")
        if n >= len(self):
            return self
        per_cat = [np.flatnonzero(self.categories == c) for c in np.unique(self.categories)]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < n:
            for members in per_cat:
                if depth < members.size and len(chosen) < n:
                    chosen.append(int(members[depth]))
            depth += 1
        return self.subset(sorted(chosen))

    def read_label_map(self, i: int) -> np.ndarray:
        """Ground-truth label map of image ``i`` as a 2-D integer array."""
        if self.label_maps is None:
            raise ValueError(f"data set {self.name!r} has no ground-truth label maps")
        return read_label_map(self.label_maps[i], self.label_colors)


def read_label_map(path: Path, colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Read a label-map image: class indices (1 channel), or colours mapped via ``colors``."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    m = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if m is None:
        raise ValueError(f"cannot read ground-truth label map {path}")
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim == 3:
        if colors is None:
            raise ValueError(
                f"label map {path} is a colour image but no class colours are known "
                "(classes.txt); save label maps as single-channel class indices"
            )
        rgb = m[:, :, 2::-1].astype(np.int64)  # BGR(A) -> RGB
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colors)}
        out = np.full(packed.shape, 255, dtype=np.uint8)  # unknown colours -> void
        for val, idx in lut.items():
            out[packed == val] = idx
        return out
    return m


def _default_root(sub: str) -> Path:
    from semcbir_fast._paths import data_root

    return data_root() / sub


def _images_dir(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


def corel1k(root: str | os.PathLike[str] | None = None) -> Dataset:
    """Corel-1K (Wang): ``<root>/images/<id>.jpg``, category ``id // 100``.

    ``root`` defaults to ``data_root()/corel1k``; a folder holding the images directly
    works too. Files whose stem is not an integer are an error.
    """
    base = Path(root) if root is not None else _default_root("corel1k")
    imgs = find_images(_images_dir(base), recursive=False)
    if not imgs:
        raise FileNotFoundError(
            f"no images under {_images_dir(base)} (Corel-1K layout: images/<id>.jpg)"
        )
    cats = []
    for p in imgs:
        if not p.stem.isdigit():
            raise ValueError(
                f"Corel-1K file names must be integer ids (<id>.jpg), got {p.name}; use "
                "--dataset folders for a folder-per-category tree"
            )
        cats.append(int(p.stem) // 100)
    return Dataset("corel1k", base, imgs, np.array(cats), read_category_names(base / "labels.csv"))


def read_category_names(csv_path: str | os.PathLike[str]) -> dict[int, str]:
    """``{class_id: class_name}`` of a Corel-1K ``labels.csv`` ({} when absent; rows that
    are not ``int,name`` are skipped)."""
    names: dict[int, str] = {}
    path = Path(csv_path)
    if path.is_file():
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                try:
                    names[int(row["class_id"])] = str(row["class_name"])
                except (KeyError, TypeError, ValueError):
                    continue
    return names


def _read_classes_txt(path: Path) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or not parts[0].strip().isdigit():
            continue
        i = int(parts[0])
        names[i] = parts[1].strip()
        if len(parts) >= 3:
            try:
                r, g, b = (int(v) for v in parts[2].split(","))
                colors[i] = (r, g, b)
            except ValueError:
                pass
    if not names:
        raise ValueError(f"{path}: no classes found (expected 'index<TAB>name<TAB>r,g,b' lines)")
    n = max(names) + 1
    name_list = [names.get(i, f"class{i}") for i in range(n)]
    color_list = [colors.get(i, (0, 0, 0)) for i in range(n)] if colors else None
    return name_list, color_list


def msrc(root: str | os.PathLike[str] | None = None) -> Dataset:
    """MSRC (v1 or v2 layout): ``images/<group>_<k>_s.jpg``, category = ``group``.

    Ground-truth maps ``labels/<stem>.png`` and ``classes.txt`` are used when present
    (all images must then have one); class 0 ("void") is the ignore index.
    ``root`` defaults to ``data_root()/msrc_v1``.
    """
    base = Path(root) if root is not None else _default_root("msrc_v1")
    imgs = find_images(_images_dir(base), recursive=False)
    if not imgs:
        raise FileNotFoundError(
            f"no images under {_images_dir(base)} (MSRC layout: images/<group>_<k>_s.jpg)"
        )
    cats = []
    for p in imgs:
        head = p.stem.split("_")[0]
        if not head.isdigit():
            raise ValueError(f"MSRC file names start with '<group>_', got {p.name}")
        cats.append(int(head))
    labels_dir = base / "labels"
    label_maps = None
    classes: list[str] | None = None
    colors = None
    ignore = None
    if labels_dir.is_dir():
        cand = [labels_dir / (p.stem + ".png") for p in imgs]
        missing = [c for c in cand if not c.is_file()]
        if not missing:
            label_maps = cand
            if (base / "classes.txt").is_file():
                classes, colors = _read_classes_txt(base / "classes.txt")
            ignore = 0
    names = {c: f"group {c}" for c in set(cats)}
    return Dataset("msrc", base, imgs, np.array(cats), names, label_maps, classes, colors, ignore)


def folders(root: str | os.PathLike[str]) -> Dataset:
    """One category per sub-folder of ``root`` (images found recursively inside each)."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"data set folder {base} does not exist")
    subs = sorted(
        (d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: natural_key(d.name),
    )
    imgs: list[Path] = []
    cats: list[int] = []
    names: dict[int, str] = {}
    for c, d in enumerate(subs):
        found = find_images(d)
        if found:
            names[c] = d.name
            imgs += found
            cats += [c] * len(found)
    if not imgs:
        raise FileNotFoundError(
            f"no images in sub-folders of {base}; a folder-per-category data set looks like "
            f"{base}/<category>/<image>.jpg"
        )
    return Dataset("folders", base, imgs, np.array(cats), names)


#: Loaders by name, for the CLI's ``--dataset``.
DATASETS = {"corel1k": corel1k, "msrc": msrc, "folders": folders}


def load_dataset(name: str, root: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a data set by layout name (``"corel1k"``, ``"msrc"``, ``"folders"``)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    if name == "folders" and root is None:
        raise ValueError("dataset 'folders' needs a root folder (--root DIR)")
    return DATASETS[name](None if root is None else Path(root).resolve())  # type: ignore[operator]


def split_disjoint(categories: Any, queries_per_category: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint query / database split: the first ``queries_per_category`` images of each
    category (in data set order) are queries, the rest the database.

    Returns
    -------
    query_idx, db_idx : numpy.ndarray
        int64 positions, ascending.
    """
    cats = np.asarray(categories).reshape(-1)
    q = int(queries_per_category)
    if q < 1:
        raise ValueError(f"queries_per_category must be >= 1, got {queries_per_category!r}")
    is_q = np.zeros(cats.shape[0], dtype=bool)
    for c in np.unique(cats):
        members = np.flatnonzero(cats == c)
        if members.size <= q:
            raise ValueError(
                f"category {c} has {members.size} images: cannot take {q} queries and keep "
                "some in the database; lower --queries-per-category"
            )
        is_q[members[:q]] = True
    return np.flatnonzero(is_q), np.flatnonzero(~is_q)
