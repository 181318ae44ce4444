"""Frame timing: which source frame is shown at each output tick of a fixed frame rate.

Times are exact :class:`~fractions.Fraction` seconds measured from the first
decoded frame; output tick ``n`` has time ``n / fps``. Two rules
(``sampling``):

* ``"ffmpeg"`` (default): exactly libavfilter's ``fps`` filter with its
  defaults (``round=near``, ``eof_action=round``). Every source frame ``i``
  gets the tick ``q_i = round_half_away(pts_i * fps)``; tick ``n`` shows the
  *last* source frame with ``q_i <= n`` (for pts >= 0: the last frame with
  ``pts_i < (n + 1/2) / fps``); ticks run from ``q_0`` up to, excluding,
  ``round_half_away(end * fps)`` where ``end`` is the last frame's pts plus
  its duration. Verified against the libavfilter bundled in the PyAV wheel.
* ``"mediapipe"``: MediaPipe's ``PacketResamplerCalculator`` (no jitter,
  ``base_timestamp: 0``), the resampler of DeepMind's published Kinetics
  pipeline: tick ``n`` shows the frame closest in time to ``n / fps`` among
  the frames of its period (ties go to the later frame), an empty period
  repeats the most recent frame, and the last frame is flushed if its period
  was not emitted.

For 30 -> 25 fps both rules pick the same frames. See docs/video.md.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, List, Literal, Optional, Sequence, Union

import numpy as np

Sampling = Literal["ffmpeg", "mediapipe"]
Rate = Union[float, int, Fraction]


def _round_half_away(x: Fraction) -> int:
    """Round to nearest, ties away from zero (FFmpeg's AV_ROUND_NEAR_INF, C's round)."""
    if x >= 0:
        return math.floor(x + Fraction(1, 2))
    return -math.floor(-x + Fraction(1, 2))


def _as_fraction(x: Rate) -> Fraction:
    """Exact rational for a time or rate; a float goes through ``limit_denominator(10**6)`` like FFmpeg's av_d2q."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    return Fraction(float(x)).limit_denominator(1_000_000)


class _Resampler:
    """Streaming frame-rate converter (holds only the previous source frame).

    Feed source frames in presentation order with ``push(item, pts)`` (pts in
    seconds, relative to the first frame); it returns the items to emit now
    (an item may repeat). ``finish(end)`` flushes, where ``end`` is the end
    time of the last frame (its pts + duration). ``fps`` None passes every
    frame through.
    """

    def __init__(self, fps: Optional[Fraction], sampling: str) -> None:
        self.fps = fps
        self.sampling = sampling
        self.prev: Any = None
        self.prev_pts: Optional[Fraction] = None
        self.next_tick: Optional[int] = None  # ffmpeg: next output tick
        self.period = 0  # mediapipe: period_count_

    def push(self, item: Any, pts: Fraction) -> List[Any]:
        if self.fps is None:
            return [item]
        if self.sampling == "ffmpeg":
            out = self._push_ffmpeg(pts)
        else:
            out = self._push_mediapipe(item, pts)
        self.prev, self.prev_pts = item, pts
        return out

    def _push_ffmpeg(self, pts: Fraction) -> List[Any]:
        assert self.fps is not None
        q = _round_half_away(pts * self.fps)
        if self.prev is None:
            self.next_tick = q  # the fps filter's first output tick is the first frame's tick
            return []
        out: List[Any] = []
        assert self.next_tick is not None
        while self.next_tick < q:  # a later frame has reached this tick: the previous one is shown
            out.append(self.prev)
            self.next_tick += 1
        return out

    def _push_mediapipe(self, item: Any, pts: Fraction) -> List[Any]:
        """PacketResamplerCalculator::ProcessWithoutJitter."""
        assert self.fps is not None
        out: List[Any] = []
        idx = _round_half_away(pts * self.fps)
        if idx >= self.period:
            while idx > self.period:
                out.append(self.prev)
                self.period += 1
            target = Fraction(self.period) / self.fps
            if pts >= target:
                send_current = self.prev is None or (pts - target <= target - self.prev_pts)
                out.append(item if send_current else self.prev)
                self.period += 1
        return out

    def finish(self, end: Fraction) -> List[Any]:
        if self.fps is None or self.prev is None:
            return []
        out: List[Any] = []
        if self.sampling == "ffmpeg":
            stop = _round_half_away(end * self.fps)  # the EOF pts, rounded like frames
            assert self.next_tick is not None
            while self.next_tick < stop:
                out.append(self.prev)
                self.next_tick += 1
        else:  # Close(): flush_last_packet (default true)
            assert self.prev_pts is not None
            if _round_half_away(self.prev_pts * self.fps) == self.period:
                out.append(self.prev)
                self.period += 1
        return out


def resample_indices(
    pts: Sequence[Rate],
    end: Rate,
    fps: Optional[Rate],
    sampling: Sampling = "ffmpeg",
) -> List[int]:
    """Source-frame index shown at each output tick (the rule :func:`~i3d_convert.io.video_decode.decode` uses).

    pts: presentation times (seconds) of the source frames in display order;
    end: end time of the last frame (its pts + duration); fps: output rate
    (None = every frame once). Times are taken relative to ``pts[0]``.
    """
    if not len(pts):
        return []
    times = [_as_fraction(p) for p in pts]
    t0 = times[0]
    resampler = _Resampler(None if fps is None else _as_fraction(fps), sampling)
    out: List[int] = []
    for i, p in enumerate(times):
        out += resampler.push(i, p - t0)
    out += resampler.finish(_as_fraction(end) - t0)
    return out
