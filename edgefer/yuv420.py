"""Exact 8-bit YUV 4:2:0 -> BGR: the same pixels on every CPU (integer OpenCV operations only).

The colour conversion of :mod:`edgefer.avdecode` (why it exists: FFmpeg's swscale SIMD paths, behind
OpenCV's reader, are not bit-exact across CPUs). :func:`bgr_of_420` takes the three planes of a
decoded frame and the frame's matrix and range; :func:`yuv_terms` gives the formula's tables, which
the tests use as the numpy reference.
"""

from __future__ import annotations

import functools
import math
import threading

import cv2
import numpy as np

# -- exact 8-bit 4:2:0 -> BGR ------------------------------------------------------------------
#
# The formula (FFmpeg's x86 yuv2rgb, written down from its definition; every term is an integer
# function of one 8-bit sample, so it is a lookup table):
#   Ys(Y) = ((8*Y - y_off) * k_y) >> 16           y_off = 128 limited range, 0 full range
#   Bu(U) = ((8*U - 1024) * k_ub) >> 16           Rv(V) = ((8*V - 1024) * k_vr) >> 16
#   Gu(U) = ((8*U - 1024) * k_ug) >> 16           Gv(V) = ((8*V - 1024) * k_vg) >> 16
#   B = clip(Ys + Bu), G = clip(Ys + Gu + Gv), R = clip(Ys + Rv)   (clip to 0..255)
# with 13-bit coefficients derived from the matrix's Kr, Kb, and each chroma sample used for its
# 2x2 block of luma samples (no chroma interpolation: swscale's unscaled converter does not
# interpolate either). ``>>`` floors, as pmulhw does.

# Kr, Kb per AVColorSpace (frame.colorspace); anything else -- unspecified, BT.470BG, SMPTE 170M,
# and also YCgCo, which swscale refuses -- is converted as BT.601, swscale's and OpenCV's default.
_KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_KR_KB_601 = (0.299, 0.114)
_BIAS = 512  # keeps every table entry of the wide path positive (|term| < 300 for every matrix)


def _round_shift16(x: int) -> int:
    """round(x / 65536) with halves up, as swscale's roundToInt16 (exact integer arithmetic)."""
    return (x + (1 << 15)) >> 16


@functools.lru_cache(maxsize=16)
def yuv_terms(colorspace: int, full_range: bool) -> tuple[np.ndarray, ...]:
    """The five per-sample terms (Ys, Bu, Gu, Gv, Rv) as int32 arrays of 256 entries.

    Coefficients are computed in exact integer arithmetic from Kr, Kb (the only floats are the
    matrix constants, rounded once to 16.16 fixed point), so the tables are the same everywhere.
    """
    kr, kb = _KR_KB.get(int(colorspace), _KR_KB_601)
    kg = 1.0 - kr - kb
    # chroma coefficients in 16.16 for limited-range chroma (the 255/224 stretch folded in)
    scale = 65536 * 255 / 224
    crv, cbu, cgu, cgv = (
        math.floor(scale * c + 0.5)
        for c in (2 * (1 - kr), 2 * (1 - kb), 2 * (1 - kb) * kb / kg, 2 * (1 - kr) * kr / kg)
    )
    cgu, cgv = -cgu, -cgv
    if full_range:  # no luma stretch; chroma back to 224/255, truncated toward zero as in C
        cy, oy = 1 << 16, 0
        crv, cbu, cgu, cgv = (int(math.copysign(abs(c) * 224 // 255, c)) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = (65536 * 255) // 219, 16 << 16
    k_y, k_vr, k_ub, k_vg, k_ug = (_round_shift16(c << 13) for c in (cy, crv, cbu, cgv, cgu))
    y_off = _round_shift16(oy << 3)
    v = np.arange(256, dtype=np.int64)
    ys = (((v << 3) - y_off) * k_y) >> 16
    c = (v << 3) - 1024

    def term(k: int) -> np.ndarray:
        return ((c * k) >> 16).astype(np.int32)

    return ys.astype(np.int32), term(k_ub), term(k_ug), term(k_vg), term(k_vr)


def _twice(term: np.ndarray) -> np.ndarray:
    """An int32 table whose entries hold a 16-bit term in both halves: a LUT through it writes each
    sample twice along its row, i.e. the horizontal chroma doubling of 4:2:0 at no extra cost."""
    bits = term.astype(np.int64) & 0xFFFF
    return (bits | bits << 16).astype(np.uint32).view(np.int32).reshape(1, 256)


class _Tables:
    """Lookup tables of the two paths of :func:`bgr_of_420` for one matrix and range.

    Wide path (any luma): every channel is ``P[Y] - N_c[U, V]`` with P = Ys + BIAS (uint16) and
    N_b = BIAS - Bu, N_g = (BIAS - Gu) - Gv, N_r = BIAS - Rv (uint16, all positive), so that a
    saturating uint16 subtraction clips below at 0 and a saturating conversion to uint8 clips above
    at 255. The chroma tables hold their term twice (:func:`_twice`).

    8-bit path (every luma term of the frame within 0..255, i.e. ``y_lo <= Y <= y_hi``): a channel
    is ``sat_sub(sat_add(Ys, Pc), Nc)`` in uint8 with Pc = min(max(C, 0), 255) and Nc = min(max(-C,
    0), 255) for its chroma term C. Exact: if C >= 0, Nc = 0 and min(255, Ys + min(C, 255)) =
    clip(Ys + C) (Ys >= 0, and both sides are 255 when C > 255); if C < 0, Pc = 0 and max(0, Ys -
    min(-C, 255)) = clip(Ys + C) (Ys <= 255, and both sides are 0 when -C > 255). Pb, Nb come from
    U, Pr, Nr from V (one int32 table each: Pc, Pc, Nc, Nc), and the green pair from A = Gu + 128
    (U) and B = 128 - Gv (V), both within 0..255: Pg = sat_sub(A, B) = max(0, Gu + Gv) and Ng =
    sat_sub(B, A) = max(0, -(Gu + Gv)), and |Gu + Gv| <= 255.
    """

    def __init__(self, colorspace: int, full_range: bool):
        ys, bu, gu, gv, rv = (t.astype(np.int64) for t in yuv_terms(colorspace, full_range))
        if max(int(np.abs(t).max()) for t in (ys, bu, rv)) >= _BIAS or int(np.abs(gu).max() + np.abs(gv).max()) >= _BIAS:
            raise ValueError(f"colour terms out of the wide path's range for colorspace {colorspace}")
        self.p = (ys + _BIAS).astype(np.uint16).reshape(1, 256)
        self.n_b, self.n_gu, self.g_v, self.n_r = (_twice(t) for t in (_BIAS - bu, _BIAS - gu, gv, _BIAS - rv))
        in_range = np.flatnonzero((ys >= 0) & (ys <= 255))  # Ys is monotonic: one run of Y values
        self.y_lo, self.y_hi = int(in_range[0]), int(in_range[-1])
        self.identity = bool(np.array_equal(ys, np.arange(256)))  # full range: Ys(Y) = Y
        self.ys = ys.clip(0, 255).astype(np.uint8).reshape(1, 256)

        def pos_neg(c: np.ndarray) -> np.ndarray:  # int32 entries: bytes Pc, Pc, Nc, Nc
            p, n = c.clip(0, 255), (-c).clip(0, 255)
            return (p | p << 8 | n << 16 | n << 24).astype(np.uint32).view(np.int32).reshape(1, 256)

        a, b = gu + 128, 128 - gv
        if min(a.min(), b.min()) < 0 or max(a.max(), b.max()) > 255 or np.abs(gu + gv[:, None]).max() > 255:
            raise ValueError(f"green terms out of the 8-bit path's range for colorspace {colorspace}")
        self.pn_b, self.pn_r = pos_neg(bu), pos_neg(rv)
        self.a_g, self.b_g = ((t | t << 8).astype(np.uint16).reshape(1, 256) for t in (a, b))


@functools.lru_cache(maxsize=16)
def _fast_tables(colorspace: int, full_range: bool) -> _Tables:
    return _Tables(colorspace, full_range)


# Scratch arrays, per thread (the reader thread and the caller may both convert) and reused while
# the frame size stays: a fresh 1080p scratch each frame costs more in page faults than the maths.
# Only the returned BGR array is new each frame.
_SCRATCH = threading.local()


def _scratch(name, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    held = getattr(_SCRATCH, "arrays", None)
    if held is None:
        held = _SCRATCH.arrays = {}
    a = held.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = held[name] = np.empty(shape, dtype)
    return a


def _chroma_scratch(ch: int, cw: int) -> list[np.ndarray]:
    """Four int32 chroma-size planes, shared by both paths (each one holds two uint16 planes)."""
    return [_scratch(("chroma", i), (ch, cw), np.int32) for i in range(4)]


# The wide path converts this many pixels per step (whole rows, an even number), so that its
# scratch (about 14 bytes a pixel) stays in cache between the operations of a step instead of a
# whole frame's worth going through memory for each; 2**18 was the fastest of 2**15..2**20 at 720p
# and 1080p (by 17% at 1080p against whole frames, on par at 720p).
_STRIP_PIXELS = 1 << 18


def bgr_of_420(y: np.ndarray, u: np.ndarray, v: np.ndarray, colorspace: int = 2, full_range: bool = False) -> np.ndarray:
    """BGR (h x w x 3 uint8) of 8-bit 4:2:0 planes by the formula above: same pixels on every CPU.

    ``y`` is h x w (h even), ``u``/``v`` are h/2 x ceil(w/2). Only integer operations with defined
    results: cv2.LUT (int32 tables whose entries hold a term twice do the horizontal chroma
    doubling), cv2.split/cv2.merge and cv2.cvtColor(GRAY2BGR) (byte moves), saturating cv2.add and
    cv2.subtract, cv2.convertScaleAbs of non-negative integers below 2**24 (exact: a saturating
    cast), cv2.minMaxLoc, and strided row views for the vertical doubling (even and odd luma rows
    share a chroma row). Two paths (see :class:`_Tables`): uint8 arithmetic on interleaved BGR when
    every luma term of the frame lies in 0..255 (always in full range), else uint16 arithmetic per
    channel, in strips of rows, and a final merge.
    """
    h, w = y.shape
    ch, cw = u.shape
    if h % 2 or ch != h // 2 or cw != (w + 1) // 2 or v.shape != u.shape:
        raise ValueError(f"not 4:2:0 planes: Y {y.shape}, U {u.shape}, V {v.shape}")
    t = _fast_tables(int(colorspace), bool(full_range))
    if t.identity:
        return _bgr_8bit(y, u, v, t, w)
    lo, hi, _, _ = cv2.minMaxLoc(y)
    if t.y_lo <= lo and hi <= t.y_hi:
        return _bgr_8bit(y, u, v, t, w)
    return _bgr_wide(y, u, v, t, w)


def _bgr_8bit(y: np.ndarray, u: np.ndarray, v: np.ndarray, t: _Tables, w: int) -> np.ndarray:
    """The 8-bit path: every luma term of the frame is within 0..255 (checked by the caller)."""
    h = y.shape[0]
    ch, cw = u.shape
    pair, *held = _chroma_scratch(ch, cw)
    (pb, nb), (pr, nr), (pg, ng) = (a.view(np.uint16).reshape(2, ch, cw) for a in held)
    cv2.LUT(u, t.pn_b, dst=pair)  # Pb Pb Nb Nb: two chroma-size planes, each sample twice
    cv2.split(pair.view(np.uint16).reshape(ch, cw, 2), [pb, nb])
    cv2.LUT(v, t.pn_r, dst=pair)
    cv2.split(pair.view(np.uint16).reshape(ch, cw, 2), [pr, nr])
    a_g, b_g = pair.view(np.uint16).reshape(2, ch, cw)
    cv2.LUT(u, t.a_g, dst=a_g)
    cv2.LUT(v, t.b_g, dst=b_g)
    pb, nb, pr, nr, pg, ng, a_g, b_g = (a.view(np.uint8) for a in (pb, nb, pr, nr, pg, ng, a_g, b_g))
    cv2.subtract(a_g, b_g, dst=pg)
    cv2.subtract(b_g, a_g, dst=ng)
    pos = cv2.merge([pb, pg, pr], _scratch("pos", (ch, 2 * cw, 3)))[:, :w]
    neg = cv2.merge([nb, ng, nr], _scratch("neg", (ch, 2 * cw, 3)))[:, :w]
    luma = y if t.identity else cv2.LUT(y, t.ys, dst=_scratch("luma", (h, w)))
    out = cv2.cvtColor(luma, cv2.COLOR_GRAY2BGR)
    even, odd = out[0::2], out[1::2]
    cv2.add(even, pos, dst=even)
    cv2.add(odd, pos, dst=odd)
    cv2.subtract(even, neg, dst=even)
    cv2.subtract(odd, neg, dst=odd)
    return out


def _bgr_wide(y: np.ndarray, u: np.ndarray, v: np.ndarray, t: _Tables, w: int) -> np.ndarray:
    """The wide path: uint16 terms, any luma (superwhite and subblack included)."""
    h = y.shape[0]
    ch, cw = u.shape
    n_b, n_g, n_r, g_v = _chroma_scratch(ch, cw)
    cv2.LUT(u, t.n_b, dst=n_b)
    cv2.LUT(v, t.n_r, dst=n_r)
    cv2.LUT(u, t.n_gu, dst=n_g)
    cv2.LUT(v, t.g_v, dst=g_v)
    cv2.subtract(n_g.view(np.int16), g_v.view(np.int16), dst=n_g.view(np.int16))  # positive: no saturation
    terms = [n.view(np.uint16)[:, :w] for n in (n_b, n_g, n_r)]  # ch x w, each sample twice
    out = np.empty((h, w, 3), np.uint8)
    step = min(h, max(2, _STRIP_PIXELS // w & ~1))
    step_p, step_s = (_scratch(name, (step, w), np.uint16) for name in ("p", "s"))
    step_planes = [_scratch(("o", i), (step, w)) for i in range(3)]
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        rows = r1 - r0  # the last step may be shorter: the head of the scratch
        p, s, planes = step_p[:rows], step_s[:rows], [o[:rows] for o in step_planes]
        cv2.LUT(y[r0:r1], t.p, dst=p)
        for n, plane in zip(terms, planes, strict=True):
            n = n[r0 // 2 : r1 // 2]
            cv2.subtract(p[0::2], n, dst=s[0::2])
            cv2.subtract(p[1::2], n, dst=s[1::2])
            cv2.convertScaleAbs(s, dst=plane)
        cv2.merge(planes, out[r0:r1])
    return out
