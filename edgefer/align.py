"""Face crops for the classifier: one affine warp per face, straight from the frame.

Each face is cut as a square of side ``scale * max(box w, box h)`` centred on its box, rotated
so that the eyes are level when landmarks are known (``align: "eyes"``), and resampled directly
to the classifier's input size. One ``cv2.warpAffine`` per face does crop, rotation and resize
at once, reading only the pixels it needs. A face 2x or more larger than the input is first
box-averaged by a power of two over the region the crop covers (:func:`prefilter`), so its
texture and the camera's noise are averaged, not aliased. Faces near the border are padded by
replicating edge pixels (FER2013-style crops have no black bars).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .artifact import InputSpec

# scale: the crop's side over the detector box's longer side. 0.95 reproduces FER2013's framing: on
# FER2013 training faces pasted into frames, RetinaFace's box is 0.98x the dataset's square (median),
# and top-1 through the loop peaks on 0.85-0.95 (edgenet 77.2% at 0.95 vs 66.8% at the old 1.2;
# mini-XCEPTION 68.6% vs 61.3%; 600 training faces, `benchmarks/README.md`, "Accuracy through the
# loop"). A model trained on faces framed otherwise records its own rule in its manifest.
DEFAULT_CROP = {"scale": 0.95, "align": "eyes"}

#: a face shrunk by 2x or more is first box-averaged (cv2.INTER_AREA) by a power of two up to
#: this, then warped: one bilinear warp straight to 48 px reads 4 frame pixels of the 25-60 behind
#: each output pixel of a 250 px face and aliases its texture and the camera's noise into the crop
#: (PublicTest faces enlarged 5x with camera noise 12: EdgeNet 57.1% bilinear, 69.6% box-averaged;
#: `benchmarks/README.md`, "Downscaling big faces")
MAX_PREFILTER = 16


def prefilter(img: np.ndarray, m: np.ndarray, out_hw: tuple[int, int], gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(source, matrix) to warp a crop from: ``img`` and ``m`` themselves for a face that shrinks
    less than 2x, else the frame region under the crop box-averaged by ``k``, a power of two (so
    the warp that follows shrinks by 1-2x), and ``m`` rewritten for that smaller region.

    Only the region the rotated crop covers (plus a pixel of bilinear support) is averaged, so the
    cost follows the face, not the frame; the region is cut at the frame's edge, where the warp's
    edge replication then starts, as it would on the whole frame. ``gray``: a BGR region is
    converted to gray before averaging (a third of the work); the source returned is then gray.
    """
    s = math.sqrt(abs(float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])))  # output px per frame px
    if s <= 0 or s > 0.5:
        return img, m
    k = min(MAX_PREFILTER, 1 << int(math.log2(1.0 / s)))  # a power of two: halved k times, 2x each
    if k < 2:
        return img, m
    oh, ow = out_hw
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [ow, 0, 1], [0, oh, 1], [ow, oh, 1]], np.float64) @ inv.T
    fh, fw = img.shape[:2]
    x0 = max(0, math.floor(corners[:, 0].min()) - k)
    y0 = max(0, math.floor(corners[:, 1].min()) - k)
    x1 = min(fw, math.ceil(corners[:, 0].max()) + k)
    y1 = min(fh, math.ceil(corners[:, 1].max()) + k)
    nx, ny = (x1 - x0) // k, (y1 - y0) // k  # whole k x k blocks only
    if nx < 2 or ny < 2:
        return img, m
    small = img[y0:y0 + ny * k, x0:x0 + nx * k]
    if gray and small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    step = k
    # 2x2 averages, repeated: OpenCV's vectorised path, 2-3x faster than one k x k area resize, and
    # integer arithmetic ((a + b + c + d + 2) >> 2 on x86 and ARM alike), so crops stay the same
    # pixels on every CPU
    while step > 1:
        small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_AREA)
        step //= 2
    # small pixel (u, v) averages frame pixels x0 + k u .. x0 + k u + k - 1: its centre is
    # x0 + k u + (k - 1) / 2, so frame p = k q + x0 + (k - 1) / 2 for small-image coordinates q
    mk = np.empty((2, 3), np.float64)
    mk[:, :2] = m[:, :2] * k
    mk[:, 2] = m[:, :2] @ np.array([x0 + (k - 1) / 2.0, y0 + (k - 1) / 2.0]) + m[:, 2]
    return small, mk


def shrink(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size_wh``: box-averaged when shrinking, bilinear when enlarging (on
    either axis: OpenCV's area mode enlarges like nearest-neighbour)."""
    w, h = size_wh
    ih, iw = image.shape[:2]
    if (ih, iw) == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if ih >= h and iw >= w else cv2.INTER_LINEAR)


def to_color(frame: np.ndarray, color: str, cache: dict | None = None) -> np.ndarray:
    """The frame in the colour a model wants (frames are BGR or gray); ``cache`` reuses conversions."""
    if cache is not None and color in cache:
        return cache[color]
    if frame.ndim == 2:
        out = frame if color == "gray" else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if color == "bgr" else cv2.COLOR_GRAY2RGB)
    elif color == "gray":
        out = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    elif color == "rgb":
        out = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    else:
        out = frame
    if cache is not None:
        cache[color] = out
    return out


def face_affine(box: np.ndarray, landmarks: np.ndarray | None, out_size: tuple[int, int], scale: float, align: bool) -> np.ndarray:
    """2x3 matrix mapping frame pixels to crop pixels for one face."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    angle = 0.0
    if align and landmarks is not None:
        (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
        if rx - lx > 1e-3:  # a sensible eye pair (left eye on the image left)
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
    oh, ow = out_size
    s = ow / side
    # rotate about the face centre by -angle (so the eyes come out level), scale, then centre in the crop
    m = cv2.getRotationMatrix2D((cx, cy), angle, s)
    m[0, 2] += ow / 2.0 - cx
    m[1, 2] += oh / 2.0 - cy
    if oh != ow:  # non-square inputs: stretch vertically to fill
        m[1] *= oh / ow
    return m


def crop_faces(
    frame: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None,
    spec: InputSpec,
    crop: dict | None = None,
    out: np.ndarray | None = None,
    color_cache: dict | None = None,
    raw: bool = False,
) -> np.ndarray:
    """A batch of face crops laid out and typed as ``spec`` wants, ready for a backend.

    ``out`` may be a preallocated uint8 buffer of shape (>=K, H, W, C) reused across frames.
    ``raw=True`` returns the uint8 NHWC crops before :func:`layout` (a view of ``out``): the
    adaptive loop compares them with a face's previous crop before deciding to classify it.
    """
    crop = {**DEFAULT_CROP, **(crop or {})}
    h, w = spec.size
    c = spec.channels
    k = len(boxes)
    # a gray model on a colour frame: with few faces, warping colour crops and converting those
    # is far cheaper than converting the whole frame (720p: ~0.4 ms for the frame, ~10 us a face);
    # both steps are linear, so the crops differ from convert-then-warp by rounding only (<= 1)
    per_crop = (spec.color == "gray" and frame.ndim == 3 and not (color_cache and "gray" in color_cache)
                and k * h * w * 8 < frame.shape[0] * frame.shape[1])
    img = frame if per_crop else to_color(frame, spec.color, color_cache)
    if out is None or out.shape[0] < k or out.shape[1:] != (h, w, c):
        out = np.empty((max(k, 1), h, w, c), np.uint8)
    tmp = np.empty((h, w, 3), np.uint8) if per_crop else None
    align = crop.get("align", "eyes") == "eyes"
    for i in range(k):
        m = face_affine(boxes[i], None if landmarks is None else landmarks[i], (h, w), float(crop["scale"]), align)
        dst = out[i] if c > 1 else out[i, :, :, 0]
        src, m = prefilter(img, m, (h, w), gray=per_crop)  # a big face: box-averaged first (no aliasing)
        if per_crop and src.ndim == 3:
            cv2.warpAffine(src, m, (w, h), dst=tmp, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            cv2.cvtColor(tmp, cv2.COLOR_BGR2GRAY, dst=dst)
        else:
            cv2.warpAffine(src, m, (w, h), dst=dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out[:k] if raw else layout(out[:k], spec)


def layout(crops: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 NHWC crops -> the dtype, normalisation and layout of ``spec``."""
    x = crops
    if spec.dtype == "float32":
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        x = (x.astype(np.float32) - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def resize_faces(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Dataset face images (N,H,W) or (N,H,W,C) uint8, already cropped -> model input batch.

    Used for accuracy measurement and calibration on datasets such as FER2013, whose images are
    already face crops.
    """
    h, w = spec.size
    c = spec.channels
    n = len(images)
    out = np.empty((n, h, w, c), np.uint8)
    for i, im in enumerate(images):
        if im.ndim == 2 and c == 3:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR if spec.color == "bgr" else cv2.COLOR_GRAY2RGB)
        elif im.ndim == 3 and im.shape[2] == 3 and c == 1:
            im = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
        elif im.ndim == 3 and im.shape[2] == 3 and spec.color == "rgb":
            im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        out[i] = shrink(im, (w, h)).reshape(h, w, c)
    return layout(out, spec)
