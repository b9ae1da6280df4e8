"""A second real paint program: MyPaint's brush engine (libmypaint), through ctypes.

`--backend mypaint` (env.BACKENDS). No Python binding of libmypaint is on PyPI and the
GObject-introspection route needs PyGObject, which pip builds from source against the
system's girepository headers; libmypaint's C API is small, so it is called directly with
ctypes (standard library) from Debian's `libmypaint-1.5-1` (`apt-get install
libmypaint-1.5-1`; libmypaint 1.5 or 1.6). Without it the backend is a one-line error.

A stroke is MyPaint's default brush (`mypaint_brush_from_defaults`: round, hardness 0.8,
antialiased, its own dab spacing and speed dynamics) dragged along the same quadratic
Bezier as the skia backend (env._dabs), its radius set before each motion event (the
same radius range), in opaque white on an empty 64x64 tiled surface; the coverage is the
surface's alpha. Opacity and colour are applied by the env exactly as for skia, so the same
actions paint in both programs and an agent trained in the dream of one is scored on both."""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from ..errors import EverloopError
from .env import R_MAX

LIBRARY = "libmypaint-1.5.so.1"
"""The shared library's soname (Debian and Ubuntu: package libmypaint-1.5-1)."""
TILE = 64  # MYPAINT_TILE_SIZE
EVENT_SECONDS = 0.01
"""Time between two motion events of a stroke, as a tablet reports them (100 Hz)."""


class _TileRequest(ctypes.Structure):
    _fields_ = [("tx", ctypes.c_int), ("ty", ctypes.c_int), ("readonly", ctypes.c_int),
                ("buffer", ctypes.POINTER(ctypes.c_uint16)), ("context", ctypes.c_void_p),
                ("thread_id", ctypes.c_int), ("mipmap_level", ctypes.c_int)]


def _library():
    name = ctypes.util.find_library("mypaint-1.5") or LIBRARY
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise EverloopError("--backend mypaint needs libmypaint 1.5/1.6 (Debian/Ubuntu: apt-get install "
                            "libmypaint-1.5-1); it is not installed") from None
    p, f, i, d = ctypes.c_void_p, ctypes.c_float, ctypes.c_int, ctypes.c_double
    sigs = {"mypaint_brush_new": ([], p), "mypaint_brush_from_defaults": ([p], None),
            "mypaint_brush_unref": ([p], None), "mypaint_brush_reset": ([p], None),
            "mypaint_brush_new_stroke": ([p], None), "mypaint_brush_set_base_value": ([p, i, f], None),
            "mypaint_brush_stroke_to": ([p, p, f, f, f, f, f, d], i),
            "mypaint_brush_setting_from_cname": ([ctypes.c_char_p], i),
            "mypaint_fixed_tiled_surface_new": ([i, i], p), "mypaint_fixed_tiled_surface_interface": ([p], p),
            "mypaint_surface_begin_atomic": ([p], None), "mypaint_surface_end_atomic": ([p, p], None),
            "mypaint_surface_unref": ([p], None),
            "mypaint_tile_request_init": ([ctypes.POINTER(_TileRequest), i, i, i, i], None),
            "mypaint_tiled_surface_tile_request_start": ([p, ctypes.POINTER(_TileRequest)], None),
            "mypaint_tiled_surface_tile_request_end": ([p, ctypes.POINTER(_TileRequest)], None)}
    for fn, (args, res) in sigs.items():
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = args, res
    return lib


class MyPaintBackend:
    """Draws stroke coverage with libmypaint's brush engine (see the module docstring)."""
    name = "mypaint"

    def __init__(self, size: int, r_max: float = R_MAX):
        self.lib, self.size, self.r_max = _library(), size, r_max
        lib = self.lib
        self.brush = lib.mypaint_brush_new()
        lib.mypaint_brush_from_defaults(self.brush)
        self.setting = {n: lib.mypaint_brush_setting_from_cname(n.encode())
                        for n in ("radius_logarithmic", "color_h", "color_s", "color_v", "opaque")}
        for n, v in (("color_h", 0.0), ("color_s", 0.0), ("color_v", 1.0), ("opaque", 1.0)):
            lib.mypaint_brush_set_base_value(self.brush, self.setting[n], v)

    def __del__(self):
        if getattr(self, "brush", None):
            self.lib.mypaint_brush_unref(self.brush)
            self.brush = None

    def coverage(self, a: np.ndarray) -> np.ndarray:
        from .env import _dabs
        lib, size = self.lib, self.size
        tiles = math.ceil(size / TILE)
        fixed = lib.mypaint_fixed_tiled_surface_new(tiles * TILE, tiles * TILE)
        surface = lib.mypaint_fixed_tiled_surface_interface(fixed)
        try:
            for ty in range(tiles):  # a new fixed surface is opaque white: make it empty
                for tx in range(tiles):
                    self._tile(surface, tx, ty, False)[:] = 0
                    self._end(surface)
            pts, radii = _dabs(a, size, self.r_max)
            lib.mypaint_brush_reset(self.brush)
            lib.mypaint_brush_new_stroke(self.brush)
            lib.mypaint_surface_begin_atomic(surface)
            radius = self.setting["radius_logarithmic"]
            for k, ((x, y), r) in enumerate(zip(pts.tolist(), radii.tolist())):
                lib.mypaint_brush_set_base_value(self.brush, radius, math.log(r))
                # pressure 0 on the first event: the pen comes down there, no dab yet
                lib.mypaint_brush_stroke_to(self.brush, surface, x, y, 1.0 if k else 0.0, 0.0, 0.0,
                                            EVENT_SECONDS if k else 1.0)
            lib.mypaint_surface_end_atomic(surface, None)
            out = np.zeros((tiles * TILE, tiles * TILE), np.float32)
            for ty in range(tiles):
                for tx in range(tiles):
                    alpha = self._tile(surface, tx, ty, True)[..., 3]  # premultiplied RGBA, 1.0 = 1 << 15
                    out[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE] = alpha / float(1 << 15)
                    self._end(surface)
        finally:
            lib.mypaint_surface_unref(surface)
        return np.clip(out[:size, :size], 0.0, 1.0)

    def _tile(self, surface, tx: int, ty: int, readonly: bool) -> np.ndarray:
        """The tile's uint16 [TILE, TILE, 4] buffer (a view); call _end after."""
        self._req = _TileRequest()
        self.lib.mypaint_tile_request_init(ctypes.byref(self._req), 0, tx, ty, int(readonly))
        self.lib.mypaint_tiled_surface_tile_request_start(surface, ctypes.byref(self._req))
        return np.ctypeslib.as_array(self._req.buffer, shape=(TILE, TILE, 4))

    def _end(self, surface) -> None:
        self.lib.mypaint_tiled_surface_tile_request_end(surface, ctypes.byref(self._req))
