"""PNG figures of the orbit engine: ground tracks on a world map and a contact-window Gantt chart.

Owns drawing only (matplotlib's Agg canvas, no pyplot state, no display). The coastline is the
0.5 contour of the land fraction on a coarse grid, computed from the land mask bundled in the
global-land-mask wheel (GLOBE 1 km data): nothing is downloaded. The wheel's own module loads the
whole 21600 x 43200 mask (~1 GB) at import, so it is never imported; its array is streamed from
the wheel's .npz and averaged block by block (about 3 s, ~20 MB, cached per process).
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from testbed.errors import InputError, SystemRequirementError
from testbed.orbit.contacts import ContactWindow
from testbed.orbit.geodesy import ecef_to_geodetic
from testbed.orbit.visibility import GroundStation

_LAND_MASK_MEMBER = "mask.npy"  # True = ocean, rows from 90N southwards, columns from 180W


def _land_mask_file() -> Path:
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise SystemRequirementError(
            "package global-land-mask is not installed (needed for the map outline)")
    return Path(next(iter(spec.submodule_search_locations))) / "globe_combined_mask_compressed.npz"


@functools.cache
def land_fraction_grid(cell_deg: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat_deg (R,), lon_deg (C,), land fraction (R, C)) on cells of `cell_deg` degrees.

    Cell centres run from north to south and from west to east.
    """
    path = _land_mask_file()
    with zipfile.ZipFile(path) as archive, archive.open(_LAND_MASK_MEMBER) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        rows, cols = shape
        k = round(cell_deg * rows / 180.0)
        if fortran or dtype != np.bool_ or k < 1 or rows % k or cols % k:
            raise SystemRequirementError(
                f"land mask in {path} has shape {shape}, dtype {dtype}; cannot average it on "
                f"{cell_deg} deg cells")
        block = bytearray(k * cols)
        view = memoryview(block)
        fraction = np.empty((rows // k, cols // k))
        for i in range(rows // k):
            filled = 0
            while filled < len(block):
                got = stream.readinto(view[filled:])
                if not got:
                    raise SystemRequirementError(f"land mask in {path} is truncated")
                filled += got
            ocean = np.frombuffer(block, dtype=np.uint8).reshape(k, cols // k, k)
            fraction[i] = 1.0 - ocean.sum(axis=(0, 2), dtype=np.int64) / (k * k)
    step = 180.0 / fraction.shape[0]
    lat = 90.0 - step * (np.arange(fraction.shape[0]) + 0.5)
    lon = -180.0 + step * (np.arange(fraction.shape[1]) + 0.5)
    return lat, lon, fraction


def _new_figure(width_in: float, height_in: float):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _break_at_antimeridian(lon_deg: np.ndarray, lat_deg: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN where a track wraps from +180 to -180 so no line crosses the map."""
    jumps = np.flatnonzero(np.abs(np.diff(lon_deg)) > 180.0) + 1
    return np.insert(lon_deg, jumps, np.nan), np.insert(lat_deg, jumps, np.nan)


def plot_ground_tracks(
    positions_km: np.ndarray,
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    stations: Sequence[GroundStation] = (),
    title: str = "Ground tracks",
    max_labels: int = 12,
) -> Path:
    """Draw the sub-satellite tracks of Earth-fixed positions (N, T, 3) on a world map; PNG.

    Stations are marked with their names. Returns the path written.
    """
    positions = np.asarray(positions_km, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise InputError(f"positions_km has shape {positions.shape}, expected (N, T, 3)",
                         field="positions_km")
    lat, lon, _ = ecef_to_geodetic(positions)
    grid_lat, grid_lon, land = land_fraction_grid()
    figure = _new_figure(11.0, 5.8)
    ax = figure.add_subplot(1, 1, 1)
    ax.contourf(grid_lon, grid_lat, land, levels=[0.5, 1.01], colors=["#e8e2d0"])
    ax.contour(grid_lon, grid_lat, land, levels=[0.5], colors=["#8a8270"], linewidths=0.5)
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    for i in range(positions.shape[0]):
        x, y = _break_at_antimeridian(lon[i], lat[i])
        color = cmap(i % 20)
        label = names[i] if names is not None and i < max_labels else None
        ax.plot(x, y, linewidth=0.8, color=color, label=label)
    for station in stations:
        lon_st = ((station.lon_deg + 180.0) % 360.0) - 180.0
        ax.plot(lon_st, station.lat_deg, marker="^", color="crimson", markersize=8)
        ax.annotate(station.name, (lon_st, station.lat_deg), xytext=(4, 4),
                    textcoords="offset points", fontsize=8, color="crimson")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title(title)
    if names is not None and positions.shape[0]:
        ax.legend(loc="lower left", fontsize=6, ncol=2)
    ax.text(1.0, -0.08, "land: GLOBE via global-land-mask", transform=ax.transAxes,
            ha="right", fontsize=6, color="gray")
    out = Path(path)
    figure.savefig(out, format="png", bbox_inches="tight")
    return out


def plot_contact_gantt(windows: Sequence[ContactWindow], path: str | Path, *,
                       title: str = "Contact windows") -> Path:
    """One row per (station, satellite), one bar per window, coloured by maximum elevation; PNG."""
    rows = sorted({(w.station, w.satellite) for w in windows})
    index = {row: i for i, row in enumerate(rows)}
    figure = _new_figure(11.0, max(2.5, 0.28 * len(rows) + 1.5))
    ax = figure.add_subplot(1, 1, 1)
    if windows:
        origin = min(w.rise_time for w in windows)
        from matplotlib import cm, colormaps, colors

        norm = colors.Normalize(vmin=0.0, vmax=90.0)
        viridis = colormaps["viridis"]
        for w in windows:
            start_h = (w.rise_time - origin).astype("timedelta64[ns]").astype(np.int64) / 3.6e12
            ax.barh(index[(w.station, w.satellite)], w.duration_s / 3600.0, left=start_h,
                    height=0.7, color=viridis(norm(w.max_elevation_deg)),
                    hatch="//" if (w.clipped_start or w.clipped_end) else None)
        mappable = cm.ScalarMappable(norm=norm, cmap=viridis)
        figure.colorbar(mappable, ax=ax, label="max elevation (deg)")
        ax.set_xlabel(f"hours since {str(origin)[:19]} UTC (hatched: clipped)")
    else:
        ax.text(0.5, 0.5, "no contact windows", transform=ax.transAxes, ha="center")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{station} / {sat}" for station, sat in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title)
    out = Path(path)
    figure.savefig(out, format="png", bbox_inches="tight")
    return out
