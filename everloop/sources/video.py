"""Video files, decoded with PyAV (FFmpeg) on all cores.

When the output needs no crop, each decoded frame is scaled and converted to RGB in one
swscale call (``reformat(..., interpolation="AREA")``) -- the same thing
``ffmpeg -vf scale=W:H -sws_flags area`` does, and the fastest path.  Otherwise the frame
is converted to RGB at full size, cropped, and area-resized by ``data.resize_area``.
"""

from __future__ import annotations

from pathlib import Path

import av

from everloop.errors import EverloopError
from everloop.sources import Source


def open_video(path: Path, geometry, fps: float | None = None) -> Source:
    """Open ``path`` and check it holds a decodable video stream; ``fps`` overrides its rate."""
    if not path.is_file():
        raise EverloopError(f"not a readable video: {path} (no such file)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise EverloopError(f"not a readable video: {path} ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise EverloopError(f"not a readable video: {path} (no video stream)")
    stream = container.streams.video[0]
    try:
        geometry.box(stream.codec_context.height, stream.codec_context.width)  # check --crop now
    except EverloopError:
        container.close()
        raise
    rate = fps or stream.average_rate or stream.guessed_rate or 30
    return Source(frames=_decode(container, stream, path, geometry), fps=float(rate),
                  total=stream.frames or None)  # container counts can be absent or approximate


def _decode(container, stream, path: Path, geometry):
    n = 0
    with container:
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is most of the cost
        try:
            for frame in container.decode(stream):
                if geometry.size is not None and geometry.box(frame.height, frame.width) is None:
                    h, w = geometry.size
                    yield frame.reformat(w, h, format="rgb24", interpolation="AREA").to_ndarray()
                else:
                    yield geometry.apply(frame.to_ndarray(format="rgb24"))
                n += 1
        except av.error.FFmpegError as e:
            raise EverloopError(
                f"not a readable video: {path} (decoding failed after {n} frames: {_reason(e)})"
            ) from None
    if n == 0:
        raise EverloopError(f"not a readable video: {path} (no frames decoded)")


def _reason(e: Exception) -> str:
    """FFmpeg's words without the path it repeats (the message names the path already)."""
    return getattr(e, "strerror", None) or str(e)
