"""CASA (computer-aided sperm analysis) kinematics of a head track: VCL, VSL, LIN and the WHO motility class.

Definitions follow the WHO laboratory manual for the examination and processing of human semen (5th ed. 2010, 6th
ed. 2021): curvilinear velocity ``VCL`` is the path length over the time, straight-line velocity ``VSL`` the
distance between the first and the last position over the time, linearity ``LIN = VSL / VCL``. Motility grades:
*progressive* sperm move actively in a line or large circle, *non-progressive* ones move without progression,
*immotile* ones do not move; the 5th edition's rapid / slow split of progressive motility uses ``25 um/s``. The
WHO grades are qualitative; the CASA thresholds of :func:`motility_class` are this package's defaults (arguments),
as CASA thresholds are set per laboratory.

:class:`RunningKinematics` keeps the same quantities for a growing track in constant time per new position (the
real-time stream updates every track on every frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MOTILITY_CLASSES", "RunningKinematics", "casa_kinematics", "motility_class"]

MOTILITY_CLASSES = ("rapid_progressive", "slow_progressive", "non_progressive", "immotile")


def casa_kinematics(track: np.ndarray | Sequence[Sequence[float]], fps: float, um_per_pixel: float = 1.0,
                    frames: np.ndarray | Sequence[int] | None = None) -> dict[str, float]:
    """VCL, VSL (um/s) and LIN of a head track.

    Args:
        track: ``(N, 2)`` head positions in pixels, ``N >= 2`` (rows with NaN are not allowed).
        fps: frame rate in frames per second (> 0).
        um_per_pixel: pixel size in micrometres (> 0).
        frames: the frame index of each position, strictly increasing (default ``0 .. N - 1``: one position per
            frame). With gaps (frames where the head was not detected) the time is that of the frame indices and
            the path between two detections is taken as straight.

    Returns:
        ``{"vcl": ..., "vsl": ..., "lin": ...}``; ``lin`` is 0 for a track that does not move.

    Raises:
        ValueError: for a track that is not ``(N, 2)`` with ``N >= 2`` finite rows, a non-positive ``fps`` /
            ``um_per_pixel``, or ``frames`` not of length ``N`` and strictly increasing.

    Example::

        >>> casa_kinematics([[0, 0], [0, 1], [0, 2]], fps=15)["vsl"]
        15.0
    """
    pts = np.asarray(track, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise ValueError(f"track must have shape (N, 2) with N >= 2, got {pts.shape}.")
    if not np.isfinite(pts).all():
        raise ValueError("track holds non-finite positions; drop the missing frames first.")
    if not fps > 0 or not um_per_pixel > 0:
        raise ValueError(f"fps and um_per_pixel must be > 0, got fps={fps!r}, um_per_pixel={um_per_pixel!r}.")
    if frames is None:
        duration = (pts.shape[0] - 1) / fps
    else:
        idx = np.asarray(frames, np.float64).reshape(-1)
        if len(idx) != len(pts) or not (np.diff(idx) > 0).all():
            raise ValueError(f"frames must hold {len(pts)} strictly increasing frame indices, got {np.shape(frames)} "
                             f"{idx[:5].tolist()}...")
        duration = (idx[-1] - idx[0]) / fps
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    vcl = float(steps.sum() * um_per_pixel / duration)
    vsl = float(np.linalg.norm(pts[-1] - pts[0]) * um_per_pixel / duration)
    lin = vsl / vcl if vcl > 0 else 0.0
    return {"vcl": vcl, "vsl": vsl, "lin": float(lin)}


def motility_class(vcl: float, vsl: float, lin: float, immotile_vcl: float = 4.0, progressive_vsl: float = 5.0,
                   progressive_lin: float = 0.4, rapid_vsl: float = 25.0) -> str:
    """WHO motility class from CASA kinematics (thresholds in um/s).

    A sperm whose ``VCL`` is below ``immotile_vcl`` is immotile; one with ``VSL >= progressive_vsl`` and
    ``LIN >= progressive_lin`` is progressive (rapid when ``VSL >= rapid_vsl``, slow otherwise); the rest are
    non-progressive.

    Returns:
        One of :data:`MOTILITY_CLASSES`.
    """
    if vcl < immotile_vcl:
        return "immotile"
    if vsl >= progressive_vsl and lin >= progressive_lin:
        return "rapid_progressive" if vsl >= rapid_vsl else "slow_progressive"
    return "non_progressive"


class RunningKinematics:
    """VCL, VSL and LIN of a track that grows one position at a time, in O(1) per position.

    Equal to :func:`casa_kinematics` of all positions added so far (with their frame indices).

    Args:
        fps: frame rate in frames per second (> 0).
        um_per_pixel: pixel size in micrometres (> 0).

    Raises:
        ValueError: for a non-positive ``fps`` or ``um_per_pixel``.

    Example::

        >>> k = RunningKinematics(fps=15)
        >>> for f, (y, x) in enumerate([(0, 0), (0, 1), (0, 2)]):
        ...     k.add(y, x, f)
        >>> k.values()["vsl"]
        15.0
    """

    def __init__(self, fps: float, um_per_pixel: float = 1.0) -> None:
        if not fps > 0 or not um_per_pixel > 0:
            raise ValueError(f"fps and um_per_pixel must be > 0, got fps={fps!r}, um_per_pixel={um_per_pixel!r}.")
        self.fps, self.um_per_pixel = float(fps), float(um_per_pixel)
        self.count = 0
        self.path = 0.0
        self.first: tuple[int, float, float] | None = None
        self.last: tuple[int, float, float] | None = None

    def add(self, y: float, x: float, frame: int) -> None:
        """Append the head position ``(y, x)`` seen in ``frame``.

        Raises:
            ValueError: for a non-finite position or a frame not after the previous one.
        """
        if not (np.isfinite(y) and np.isfinite(x)):
            raise ValueError(f"position must be finite, got ({y}, {x}).")
        if self.last is not None:
            if frame <= self.last[0]:
                raise ValueError(f"frame must increase: got {frame} after {self.last[0]}.")
            self.path += float(np.hypot(y - self.last[1], x - self.last[2]))
        else:
            self.first = (int(frame), float(y), float(x))
        self.last = (int(frame), float(y), float(x))
        self.count += 1

    def values(self) -> dict[str, float] | None:
        """``{"vcl", "vsl", "lin"}`` as :func:`casa_kinematics`; ``None`` before two positions."""
        if self.count < 2:
            return None
        duration = (self.last[0] - self.first[0]) / self.fps
        vcl = self.path * self.um_per_pixel / duration
        vsl = float(np.hypot(self.last[1] - self.first[1], self.last[2] - self.first[2])) * self.um_per_pixel / duration
        return {"vcl": vcl, "vsl": vsl, "lin": vsl / vcl if vcl > 0 else 0.0}
