"""Landmark and candidate point files: 3D Slicer ``.fcsv``, JSON and CSV, in world (mm) or voxel coordinates.

Every reader returns a :class:`PointSet` (names, integer labels, ``(N, 3)`` positions and their coordinate
system); :func:`points_to_voxels` maps a point set into a volume's voxel grid and refuses points that fall outside
the volume, naming the likely mistake (voxel indices given as mm, LPS given as RAS, ...).

Formats:

* ``.fcsv`` (3D Slicer Markups fiducials): header lines start with ``#``; ``# CoordinateSystem = 0`` or ``RAS``
  (``1`` or ``LPS`` for LPS); columns ``id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID``. The
  ``label`` column is either an integer id (then ``desc`` is the name, the AFIDs convention) or the point's name
  (then its integer label is the row number, 1-based, unless a name map is given).
* ``.json``: ``{"coordinate_system": "RAS" | "LPS", "units": "mm" | "voxel", "landmarks": [{"name": ...,
  "label": int, "position": [x, y, z]}, ...]}`` (``label`` optional: row number).
* ``.csv``: a header with ``x,y,z`` and optionally ``label`` and ``name`` columns; the coordinate system and units
  are the reader's arguments (default RAS mm).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["PointSet", "read_points", "write_points_fcsv", "write_points_json", "points_to_voxels"]

_SYSTEMS = ("RAS", "LPS")
_UNITS = ("mm", "voxel")


@dataclass
class PointSet:
    """Named, labelled 3D points.

    Attributes:
        names: one name per point.
        labels: ``(N,)`` int64 labels (landmark class ids ``>= 1``, or candidate labels 0/1).
        positions: ``(N, 3)`` float64 coordinates.
        coordinate_system: ``"RAS"`` or ``"LPS"`` (world axes; ignored for voxel units).
        units: ``"mm"`` (world) or ``"voxel"`` (voxel indices).
        source: file the points were read from (for error messages).
    """

    names: list[str]
    labels: np.ndarray
    positions: np.ndarray
    coordinate_system: str = "RAS"
    units: str = "mm"
    source: str = field(default="<memory>")

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if not len(self.names) == len(self.labels) == len(self.positions):
            raise ValueError(
                f"{self.source}: {len(self.names)} names, {len(self.labels)} labels and {len(self.positions)} "
                "positions must have the same length."
            )
        if self.coordinate_system not in _SYSTEMS:
            raise ValueError(
                f"{self.source}: coordinate_system must be one of {_SYSTEMS}, got {self.coordinate_system!r}."
            )
        if self.units not in _UNITS:
            raise ValueError(f"{self.source}: units must be one of {_UNITS}, got {self.units!r}.")
        if not np.isfinite(self.positions).all():
            raise ValueError(f"{self.source}: positions must be finite numbers.")

    def to_ras(self) -> PointSet:
        """The same points in RAS (LPS flips the signs of the first two axes; voxel units are returned as is)."""
        if self.units == "voxel" or self.coordinate_system == "RAS":
            return self
        pos = self.positions * np.array([-1.0, -1.0, 1.0])
        return PointSet(list(self.names), self.labels.copy(), pos, "RAS", self.units, self.source)

    def relabel(self, name_to_label: Mapping[str, int]) -> PointSet:
        """Labels from a ``name -> label`` map (e.g. a datalist's ``landmark_names``).

        Raises:
            ValueError: when a point's name is not in the map (the message lists the known names).
        """
        unknown = [n for n in self.names if n not in name_to_label]
        if unknown:
            raise ValueError(
                f"{self.source}: landmark name(s) {unknown} not in the expected names {list(name_to_label)}."
            )
        labels = np.array([name_to_label[n] for n in self.names], dtype=np.int64)
        return PointSet(list(self.names), labels, self.positions.copy(), self.coordinate_system, self.units,
                        self.source)


def _read_fcsv(path: Path) -> PointSet:
    system = "RAS"
    columns = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc", "associatedNodeID"]
    rows = []
    with open(path, newline="") as f:
        for line in f:
            if line.startswith("#"):
                key, _, value = line[1:].partition("=")
                key, value = key.strip().lower(), value.strip()
                if key == "coordinatesystem":
                    system = {"0": "RAS", "ras": "RAS", "1": "LPS", "lps": "LPS"}.get(value.lower(), value)
                elif key == "columns":
                    columns = [c.strip() for c in value.split(",")]
                continue
            if line.strip():
                rows.append(next(csv.reader([line])))
    for col in ("x", "y", "z", "label"):
        if col not in columns:
            raise ValueError(f"{path}: .fcsv columns {columns} lack '{col}'.")
    ix = [columns.index(c) for c in ("x", "y", "z")]
    il = columns.index("label")
    idesc = columns.index("desc") if "desc" in columns else None
    names, labels, pos = [], [], []
    for r, row in enumerate(rows):
        try:
            pos.append([float(row[i]) for i in ix])
        except (ValueError, IndexError) as e:
            raise ValueError(f"{path}: row {r + 1} has no numeric x, y, z ({row}).") from e
        label = row[il].strip() if len(row) > il else ""
        desc = row[idesc].strip() if idesc is not None and len(row) > idesc else ""
        if label.isdigit():  # AFIDs convention: integer id in `label`, the name in `desc`
            labels.append(int(label))
            names.append(desc or label)
        else:
            labels.append(r + 1)
            names.append(label or str(r + 1))
    if system not in _SYSTEMS:
        raise ValueError(f"{path}: unsupported CoordinateSystem {system!r}; expected 0/RAS or 1/LPS.")
    return PointSet(names, np.array(labels), np.array(pos).reshape(-1, 3), system, "mm", str(path))


def _read_json(path: Path) -> PointSet:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(content, dict) or not isinstance(content.get("landmarks"), list):
        raise ValueError(f"{path}: expected an object with a 'landmarks' list.")
    names, labels, pos = [], [], []
    for i, item in enumerate(content["landmarks"]):
        p = item.get("position") if isinstance(item, dict) else None
        if not isinstance(p, (list, tuple)) or len(p) != 3:
            raise ValueError(f"{path}: landmarks[{i}] needs a 'position' of 3 numbers, got {p!r}.")
        pos.append([float(v) for v in p])
        labels.append(int(item.get("label", i + 1)))
        names.append(str(item.get("name", labels[-1])))
    return PointSet(
        names, np.array(labels), np.array(pos).reshape(-1, 3), str(content.get("coordinate_system", "RAS")).upper(),
        str(content.get("units", "mm")).lower(), str(path),
    )


def _read_csv(path: Path, coordinate_system: str, units: str) -> PointSet:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in ("x", "y", "z") if c not in fields]
        if missing:
            raise ValueError(f"{path}: CSV header {reader.fieldnames} lacks column(s) {missing}.")
        names, labels, pos = [], [], []
        for i, row in enumerate(reader):
            row = {k.strip().lower(): v for k, v in row.items() if k is not None}
            try:
                pos.append([float(row[c]) for c in ("x", "y", "z")])
                labels.append(int(row["label"]) if row.get("label") not in (None, "") else i + 1)
            except ValueError as e:
                raise ValueError(f"{path}: row {i + 1} has a non-numeric coordinate or label ({row}).") from e
            names.append(row.get("name") or str(labels[-1]))
    return PointSet(names, np.array(labels), np.array(pos).reshape(-1, 3), coordinate_system, units, str(path))


def read_points(path: str | os.PathLike, coordinate_system: str = "RAS", units: str = "mm",
                names: Sequence[str] | None = None) -> PointSet:
    """Read a landmark/candidate file (``.fcsv``, ``.json`` or ``.csv``).

    Args:
        path: the file.
        coordinate_system: world axes of a CSV file (``.fcsv`` and ``.json`` carry their own).
        units: ``"mm"`` or ``"voxel"`` for a CSV file.
        names: when given, labels are ``names.index(name) + 1`` (landmark class ids shared across cases).

    Returns:
        The point set in the file's coordinate system (call :meth:`PointSet.to_ras` to convert).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unknown extension, malformed content (names the file and row), or unknown landmark names.

    Example::

        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pts.csv"
        >>> _ = p.write_text("label,name,x,y,z\\n1,AC,0.5,2.0,-4.0\\n")
        >>> read_points(p).positions
        array([[ 0.5,  2. , -4. ]])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: '{path}'.")
    suffix = path.suffix.lower()
    if suffix == ".fcsv":
        points = _read_fcsv(path)
    elif suffix == ".json":
        points = _read_json(path)
    elif suffix == ".csv":
        points = _read_csv(path, coordinate_system.upper(), units.lower())
    else:
        raise ValueError(f"{path}: unsupported landmark file extension '{suffix}'; expected .fcsv, .json or .csv.")
    if names is not None:
        points = points.relabel({n: k + 1 for k, n in enumerate(names)})
    return points


def write_points_json(points: PointSet, path: str | os.PathLike) -> Path:
    """Write a point set in the JSON format read by :func:`read_points`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "coordinate_system": points.coordinate_system,
        "units": points.units,
        "landmarks": [
            {"name": n, "label": int(lab), "position": [float(v) for v in p]}
            for n, lab, p in zip(points.names, points.labels, points.positions, strict=False)
        ],
    }
    path.write_text(json.dumps(content, indent=1))
    return path


def write_points_fcsv(points: PointSet, path: str | os.PathLike, descriptions: Sequence[str] | None = None) -> Path:
    """Write a world-mm point set as a 3D Slicer Markups ``.fcsv``; returns the path.

    Slicer shows the ``label`` column, so it holds each point's name; ``desc`` holds ``descriptions`` (e.g. the
    probability). :func:`read_points` reads the file back with the same names and positions (labels are the row
    numbers, or the class ids when given ``names``).

    Raises:
        ValueError: for voxel units (a ``.fcsv`` holds world coordinates), a wrong number of descriptions, or a name
            that is an integer (it would be read back as a class id).
    """
    if points.units != "mm":
        raise ValueError(f"{points.source}: a .fcsv holds world (mm) coordinates; got units {points.units!r}.")
    if descriptions is not None and len(descriptions) != len(points.names):
        raise ValueError(f"{len(descriptions)} descriptions for {len(points.names)} points.")
    digits = [n for n in points.names if str(n).strip().isdigit()]
    if digits:
        raise ValueError(f"{points.source}: names {digits[:5]} are integers; a .fcsv label must be a name.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Markups fiducial file version = 4.11", f"# CoordinateSystem = {points.coordinate_system}",
             "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID"]
    for i, (name, p) in enumerate(zip(points.names, points.positions, strict=True)):
        desc = "" if descriptions is None else str(descriptions[i]).replace(",", ";")
        lines.append(f"vtkMRMLMarkupsFiducialNode_{i + 1},{p[0]:.4f},{p[1]:.4f},{p[2]:.4f},0,0,0,1,1,1,0,"
                     f"{str(name).replace(',', ';')},{desc},")
    path.write_text("\n".join(lines) + "\n")
    return path


def _inside(vox: np.ndarray, shape: Sequence[int], tol: float) -> np.ndarray:
    return np.all((vox >= -tol) & (vox <= np.asarray(shape, dtype=np.float64) - 1 + tol), axis=1)


def points_to_voxels(points: PointSet, affine: np.ndarray, shape: Sequence[int], tolerance: float = 0.5) -> np.ndarray:
    """Voxel coordinates ``(N, 3)`` of ``points`` in a volume with RAS ``affine`` and spatial ``shape``.

    Args:
        points: the point set (world mm in RAS or LPS, or voxel indices).
        affine: ``4x4`` voxel-to-RAS-world affine of the volume (nibabel / MONAI MetaTensor convention).
        shape: spatial shape ``(X, Y, Z)``.
        tolerance: points up to this many voxels outside ``[0, size - 1]`` are accepted.

    Raises:
        ValueError: when any point lies outside the volume. The message names the file and points and, when the
            points would fit under another interpretation (voxel vs mm, LPS vs RAS), says which.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}.")
    inv = np.linalg.inv(affine)

    def world_to_vox(p: np.ndarray) -> np.ndarray:
        return (inv @ np.c_[p, np.ones(len(p))].T).T[:, :3]

    if points.units == "voxel":
        vox = points.positions.copy()
    else:
        vox = world_to_vox(points.to_ras().positions)
    ok = _inside(vox, shape, tolerance)
    if ok.all():
        return vox
    bad = [f"{points.names[i]} {np.round(points.positions[i], 2).tolist()}" for i in np.flatnonzero(~ok)[:5]]
    hint = ""
    if points.units == "mm":
        flipped = world_to_vox(points.to_ras().positions * np.array([-1.0, -1.0, 1.0]))
        if _inside(points.positions, shape, tolerance).all():
            hint = " They fit the volume as voxel indices: are they voxel coordinates (units='voxel')?"
        elif _inside(flipped, shape, tolerance).all():
            other = "LPS" if points.coordinate_system == "RAS" else "RAS"
            hint = f" They fit the volume in {other}: is the coordinate system {other}?"
    elif _inside(world_to_vox(points.positions), shape, tolerance).all():
        hint = " They fit the volume as world coordinates: are they in mm (units='mm')?"
    raise ValueError(
        f"{points.source}: {int((~ok).sum())} of {len(vox)} point(s) lie outside the volume of shape "
        f"{tuple(int(s) for s in shape)} ({points.units}, {points.coordinate_system}): {bad}.{hint}"
    )
