"""The embedded demo clip: a short excerpt of the lava-lamp recording that ships with the
package, so ``everloop`` works out of the box.

The excerpt is cut by remuxing packets (stream copy): no re-encode, so it keeps the
original's quality bit for bit.  The cut starts at a keyframe and ends just before the
first keyframe at or after ``seconds``, i.e. whole GOPs only -- with B-frames, cutting
mid-GOP would leave frames whose references were dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from everloop.errors import EverloopError

DEMO_CLIP = Path(__file__).parent.parent / "assets" / "lava-demo.mp4"

# The shipped clip was made with make_demo_clip(<lavalite-classic.mp4>, DEMO_CLIP, 158):
# 4750 frames (158.3 s, 1,899,969 bytes): the longest whole-GOP excerpt from the start
# that stays under 1.9 MB (the next GOP would pass it; the licence allows at most 2 MB).
DEMO_SECONDS = 158


def make_demo_clip(src, dst, seconds: float = 120) -> dict:
    """Copy the first ``seconds`` (rounded up to a whole GOP) of ``src``'s video stream,
    from its first keyframe, into the MP4 ``dst``.  Returns frames, seconds and bytes."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.mp4")
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise EverloopError(f"not a readable video: {src} ({getattr(e, 'strerror', e)})") from None
    try:
        with inp, av.open(str(tmp), "w", format="mp4") as out:
            ist = inp.streams.video[0]
            ost = out.add_stream_from_template(ist)
            start = end = None
            frames = 0
            for packet in inp.demux(ist):
                if packet.dts is None:  # the demuxer's final empty packet
                    continue
                if start is None:
                    if not packet.is_keyframe:
                        continue
                    start = packet.pts
                    end = start + seconds / ist.time_base
                elif packet.is_keyframe and packet.pts >= end:
                    break
                packet.pts -= start
                packet.dts -= start
                packet.stream = ost
                out.mux(packet)
                frames += 1
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"frames": frames, "seconds": float(frames / ist.average_rate),
            "bytes": dst.stat().st_size}
