"""Where generated frames go: video files, animated images, or a folder of PNGs.

Generation is an unbounded stream of uint8 ``[n, H, W, 3]`` chunks, so every sink encodes
frame by frame and keeps at most a frame or two (plus whatever the encoder buffers) in
memory; a 100,000-frame run costs the same RAM as a 100-frame one.

Every sink writes to a hidden temp path beside the target (``.NAME.tmp-<pid>``) and renames
it into place only when ``close()`` succeeds, so a crash, Ctrl-C or an exception inside
``with open_sink(...)`` never leaves a half-written file and never clobbers an existing one.
An existing target is replaced only with ``force``, and only if it is the same kind of
output (a video by a video, a frame folder by a frame folder: outputs.claim); the temp of
a killed process is removed at the next write into its folder.

Kinds, picked by suffix (case-insensitive):

- ``.mp4``  H.264 (libx264, crf 18, yuv420p; mpeg4 if this FFmpeg lacks libx264).
- ``.webm`` VP9 (libvpx-vp9, crf 30, yuv420p).
- ``.png``  animated PNG that loops forever, lossless (FFmpeg's apng muxer, which streams;
  Pillow's APNG writer holds every frame until the end, so it is not used).
- ``.gif``  GIF that loops forever, one 256-colour palette per frame. GIF delays are whole
  centiseconds (30 fps plays at 33.3 fps) and browsers slow delays under 2 cs down to
  10 cs, so keep GIFs short and at most 50 fps; they are for clips, not for hours of lava.
- no suffix or a trailing ``/``: a folder of ``frame_0000000.png`` files (lossless).

yuv420p halves chroma resolution, so H.264/VP9 need even sizes: odd widths/heights are
padded by one edge-replicated column/row on the right/bottom (a 17x13 stream becomes an
18x14 video) rather than rescaled, which would blur every pixel of tiny frames.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np

from everloop.errors import EverloopError
from everloop.outputs import claim, kind_of, swap_into_place


def _sink_class(raw: str):
    if raw.endswith(("/", os.sep)) or Path(raw).suffix == "":
        return FolderSink
    cls = _BY_SUFFIX.get(Path(raw).suffix.lower())
    if cls is None:
        raise EverloopError(
            f"{raw}: unknown output kind {Path(raw).suffix!r}; use .mp4, .webm, "
            ".png (animated), .gif, or a folder (no suffix or a trailing /)")
    return cls


def output_kind(path) -> str:
    """'frames' (a folder of PNGs) or 'video', for outputs.claim; unknown suffixes raise."""
    return "frames" if _sink_class(os.fspath(path)) is FolderSink else "video"


def open_sink(path, fps: float = 30, frames: int | None = None, force: bool = False,
              inputs: dict | None = None) -> Sink:
    """Return the sink for ``path``'s kind; raise EverloopError before writing anything if
    the kind is unknown, or ``path`` exists and ``force`` is false or it holds something
    else than this kind of output, or it is one of ``inputs`` ({flag: path}).

    ``frames`` is the total frame count when known; the folder sink uses it to widen its
    zero padding past 7 digits, the others stream without it.
    """
    raw = os.fspath(path)
    cls = _sink_class(raw)
    try:  # 30, 24.0, 29.97, numpy scalars, Fraction(30000, 1001); 1001 keeps NTSC exact
        rate = Fraction(str(fps)).limit_denominator(1001)
    except ValueError:
        rate = Fraction(0)
    if rate <= 0:
        raise EverloopError(f"--fps must be a positive number, got {fps!r}")
    if frames is not None and frames < 1:
        raise EverloopError(f"--frames must be at least 1, got {frames!r}")
    target = Path(raw.rstrip("/" + os.sep) or raw)
    claim(target, "frames" if cls is FolderSink else "video", force=force, inputs=inputs)
    return cls(target, rate, frames, force)


class Sink:
    """Base class: input checks, temp path, atomic commit, context-manager cleanup.

    Subclasses implement ``_open(h, w)`` (called on the first chunk, when the frame size
    becomes known), ``_write(chunk)`` and ``_finish()`` (flush and close the temp output).
    """

    def __init__(self, target: Path, fps: Fraction, frames: int | None, force: bool):
        self.path, self.fps, self.frames, self.force = target, fps, frames, force
        self.tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        self.count = 0  # frames written so far
        self.size: tuple[int, int] | None = None  # (H, W) of the first chunk
        self.closed = False

    def write(self, chunk: np.ndarray) -> None:
        """Append ``chunk``: uint8 ``[n, H, W, 3]`` (or a single ``[H, W, 3]`` frame)."""
        if self.closed:
            raise EverloopError(f"{self.path}: write() after close()")
        chunk = np.asarray(chunk)
        if chunk.ndim == 3:
            chunk = chunk[None]
        if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise EverloopError(f"{self.path}: frames must be uint8 [n, H, W, 3], "
                                f"got {chunk.dtype} {list(chunk.shape)}")
        if len(chunk) == 0:
            return
        if self.size is None:
            self.size = chunk.shape[1:3]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open(*self.size)
        elif chunk.shape[1:3] != self.size:
            raise EverloopError(f"{self.path}: frame size changed from {self.size} "
                                f"to {chunk.shape[1:3]} mid-stream")
        self._write(np.ascontiguousarray(chunk))
        self.count += len(chunk)

    def close(self) -> None:
        """Finish the file and move it into place; on any failure discard it instead."""
        if self.closed:
            return
        try:
            if self.count == 0:
                raise EverloopError(f"{self.path}: no frames were written")
            self._finish()
            self.closed = True
            _commit(self.tmp, self.path, self.force)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial output: close whatever is open, delete the temp path."""
        self.closed = True
        try:
            self._finish()
        except Exception:  # noqa: BLE001, S110 (the encoder may be in any state; the output is going away)
            pass
        _remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AvSink(Sink):
    """One PyAV video stream fed rgb24 frames; pts = frame index, time base = 1/fps."""

    format = codec = pix_fmt = ""
    muxer_options: ClassVar[dict] = {}
    codec_options: ClassVar[dict] = {}
    even = False  # pad odd sizes up to even (needed by yuv420p)
    container = stream = None

    def _open(self, h, w):
        import av

        self.container = av.open(str(self.tmp), "w", format=self.format,
                                 options=self.muxer_options)
        self.stream = self.container.add_stream(self._codec(), rate=self.fps,
                                                options=dict(self.codec_options))
        if self.even:
            h, w = h + h % 2, w + w % 2
        self.stream.height, self.stream.width = h, w
        self.stream.pix_fmt = self.pix_fmt
        self._configure(self.stream.codec_context)

    def _codec(self) -> str:
        return self.codec

    def _configure(self, cc) -> None:
        pass

    def _frame(self, rgb: np.ndarray, index: int):
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = index, 1 / self.fps
        return frame

    def _write(self, chunk):
        for index, rgb in enumerate(chunk, start=self.count):
            self._encode(self._frame(rgb, index))

    def _encode(self, frame) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def _finish(self):
        if self.container is None:
            return
        try:
            if not self.closed:  # flush only on success; aborts just close
                self._encode(None)
        finally:
            container, self.container = self.container, None
            container.close()


class _YuvSink(_AvSink):
    """H.264 / VP9 in yuv420p, so odd sizes are edge-padded to even (see module doc)."""

    pix_fmt, even = "yuv420p", True

    def _configure(self, cc):
        # BT.709 throughout: players assume it for most untagged video, so convert with it
        # (swscale's default is BT.601, which shifts reds and greens) and tag it.
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # AVCOL_*_BT709
        cc.color_range = 1  # limited "TV" range, what every player expects

    def _frame(self, rgb, index):
        h, w, _ = rgb.shape
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        return super()._frame(rgb, index).reformat(
            format="yuv420p", src_colorspace="itu709", dst_colorspace="itu709")


class Mp4Sink(_YuvSink):
    format = "mp4"
    muxer_options: ClassVar[dict] = {"movflags": "+faststart"}  # index first: browsers play at once

    def _codec(self):
        import av

        if "libx264" in av.codecs_available:
            self.codec_options = {"crf": "18", "preset": "medium"}
            return "libx264"
        return "mpeg4"

    def _configure(self, cc):
        super()._configure(cc)
        if cc.name == "mpeg4":  # no crf; a fixed quantiser (`ffmpeg -q:v 3`) is closest
            cc.qscale = True  # AV_CODEC_FLAG_QSCALE
            cc.global_quality = 3 * 118  # 3 * FF_QP2LAMBDA


class WebmSink(_YuvSink):
    format, codec = "webm", "libvpx-vp9"
    # b=0: constant quality from crf alone; cpu-used 4 + row-mt: much faster than default
    codec_options: ClassVar[dict] = {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4",
                     "row-mt": "1"}


class ApngSink(_AvSink):
    """Lossless animated PNG via FFmpeg's apng muxer, which writes each frame as it comes
    and patches the frame count into acTL at the end (so ``frames`` is not needed)."""

    format = codec = "apng"
    pix_fmt = "rgb24"
    muxer_options: ClassVar[dict] = {"plays": "0"}  # acTL num_plays 0 = loop forever

    def _configure(self, cc):
        cc.sample_aspect_ratio = Fraction(1, 1)  # else pHYs says 0:1


class GifSink(_AvSink):
    """GIF via FFmpeg: palettegen (one palette per frame) -> paletteuse -> gif encoder.

    A global palette would need every frame up front; per-frame palettes stream and follow
    the colour drift of a lava lamp. Ordered (bayer) dithering stays put from frame to
    frame, where error diffusion crawls and defeats the encoder's storing of only the
    pixels that changed.
    """

    format = codec = "gif"
    pix_fmt = "pal8"
    muxer_options: ClassVar[dict] = {"loop": "0"}  # NETSCAPE2.0 loop count 0 = forever
    graph = None

    def _configure(self, cc):
        import av.filter

        h, w = self.size
        g = av.filter.Graph()
        src = g.add_buffer(width=w, height=h, format="rgb24", time_base=1 / self.fps)
        split, sink = g.add("split"), g.add("buffersink")
        gen = g.add("palettegen", "stats_mode=single:reserve_transparent=0")
        use = g.add("paletteuse", "new=1:dither=bayer:bayer_scale=3")
        src.link_to(split)
        split.link_to(gen, 0, 0)
        split.link_to(use, 1, 0)
        gen.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        self.graph = g

    def _encode(self, frame):
        import av

        if self.graph is None:  # _open failed before the graph was built
            return
        self.graph.push(frame)  # None flushes the graph, then the encoder below
        while True:
            try:
                out = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            super()._encode(out)
        if frame is None:
            super()._encode(None)


class FolderSink(Sink):
    """A folder of lossless ``frame_0000000.png`` files (Pillow, one file per frame)."""

    def _open(self, h, w):
        self.tmp.mkdir()
        self.digits = max(7, len(str((self.frames or 1) - 1)))

    def _write(self, chunk):
        from PIL import Image

        for i, rgb in enumerate(chunk, start=self.count):
            Image.fromarray(rgb).save(self.tmp / f"frame_{i:0{self.digits}d}.png")

    def _finish(self):
        pass


_BY_SUFFIX = {".mp4": Mp4Sink, ".webm": WebmSink, ".png": ApngSink, ".gif": GifSink}


def _commit(tmp: Path, target: Path, force: bool) -> None:
    """Move the finished temp output onto ``target`` (outputs.swap_into_place: a file over a
    file in one atomic rename; a folder by renaming the old one aside first, so there is
    always a complete output at or next to ``target``, never a mix of old and new frames)."""
    if os.path.lexists(target) and not force and kind_of(target) != "empty":  # appeared while we wrote
        raise EverloopError(f"{target} exists; pass --force to overwrite")
    swap_into_place(tmp, target)


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists; used only on our own temp paths."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()
