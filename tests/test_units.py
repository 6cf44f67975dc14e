"""Unit checks of the runtime's pure parts: manifest schema, tracker, aligner, sources."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgefer import artifact
from edgefer.align import crop_faces, face_affine, resize_faces
from edgefer.artifact import InputSpec, Manifest
from edgefer.errors import EdgeferError
from edgefer.sources import open_source
from edgefer.track import IoUTracker, iou_matrix


def _classifier_manifest(**kw):
    d = dict(name="m", kind="classifier", files={"model": "m.onnx"}, classes=["a", "b"],
             input=InputSpec(size=[8, 8]))
    d.update(kw)
    return Manifest(**d)


def test_manifest_roundtrip_and_checksum(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not really onnx")
    m = _classifier_manifest()
    artifact.write_artifact(m, tmp_path)
    art = artifact.load(tmp_path, verify=True)
    assert art.manifest.classes == ["a", "b"]
    assert art.manifest.checksums["m.onnx"].startswith("sha256:")
    # a replaced file is caught
    (tmp_path / "m.onnx").write_bytes(b"tampered")
    with pytest.raises(EdgeferError, match="checksum"):
        artifact.load(tmp_path)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"kind": "regressor"}, "kind"),
        ({"precision": "int4"}, "precision"),
        ({"classes": []}, "class names"),
        ({"schema": 99}, "schema"),
        ({"surprise_key": 1}, "unknown manifest keys"),
    ],
)
def test_manifest_rejects_bad_fields(tmp_path, patch, message):
    d = _classifier_manifest().to_dict()
    d.update(patch)
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(EdgeferError, match=message):
        artifact.load(tmp_path, verify=False)


def test_manifest_not_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EdgeferError, match="not valid JSON"):
        artifact.load(tmp_path)


def test_unknown_model_name():
    with pytest.raises(EdgeferError, match="not found"):
        artifact.load("no-such-model")


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 50 / 150, 0.0], rtol=1e-6)


def test_tracker_keeps_ids_and_smooths():
    t = IoUTracker(smoothing=0.5)
    b1 = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], np.float32)
    ids1, p1 = t.update(b1, np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    # the faces move a little and swap order; probabilities flip
    b2 = np.array([[102, 101, 122, 121], [1, 1, 11, 11]], np.float32)
    ids2, p2 = t.update(b2, np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    assert ids2[0] == ids1[1] and ids2[1] == ids1[0]
    np.testing.assert_allclose(p2, [[0.5, 0.5], [0.5, 0.5]])
    # a new face far away gets a new id
    ids3, _ = t.update(np.array([[300, 300, 320, 320]], np.float32), np.array([[1.0, 0.0]], np.float32))
    assert ids3[0] not in set(ids1)


def test_tracker_forgets_after_misses():
    t = IoUTracker(max_misses=2)
    ids, _ = t.update(np.array([[0, 0, 10, 10]], np.float32), None)
    for _ in range(3):
        t.update(np.zeros((0, 4), np.float32), None)
    ids2, _ = t.update(np.array([[0, 0, 10, 10]], np.float32), None)
    assert ids2[0] != ids[0]


def test_crop_levels_the_eyes():
    """A face rotated by 20 degrees comes out of the aligner with level eyes."""
    img = np.zeros((200, 200, 3), np.uint8)
    # two bright "eyes" on a line tilted by +20 degrees about (100, 100)
    ang = np.deg2rad(20)
    left = (100 - 30 * np.cos(ang), 100 - 30 * np.sin(ang))
    right = (100 + 30 * np.cos(ang), 100 + 30 * np.sin(ang))
    for x, y in (left, right):
        cv2.circle(img, (int(round(x)), int(round(y))), 5, (255, 255, 255), -1)
    box = np.array([[50, 50, 150, 150]], np.float32)
    lm = np.array([[left, right, (100, 110), (85, 130), (115, 130)]], np.float32)
    spec = InputSpec(size=[64, 64], color="gray")
    crop = crop_faces(img, box, lm, spec, {"scale": 1.0, "align": "eyes"})
    assert crop.shape == (1, 64, 64, 1)
    ys, xs = np.nonzero(crop[0, :, :, 0] > 128)
    lx, rx = xs < 32, xs >= 32
    assert abs(ys[lx].mean() - ys[rx].mean()) < 1.5  # level
    # and without alignment they are not
    crop2 = crop_faces(img, box, lm, spec, {"scale": 1.0, "align": "none"})
    ys, xs = np.nonzero(crop2[0, :, :, 0] > 128)
    assert abs(ys[xs < 32].mean() - ys[xs >= 32].mean()) > 8


def test_gray_crops_from_a_colour_frame_match_either_way(photos_dir):
    """Few faces: colour crops converted to gray; many (or a cached gray frame): the frame is
    converted once. The two paths give the same crops up to uint8 rounding."""
    img = cv2.imread(str(photos_dir / "two_people.jpg"))
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 200, (40, 2))], 1).astype(np.float32)
    spec = InputSpec(size=[64, 64], color="gray")
    few = crop_faces(img, boxes[:3], None, spec)  # per-crop conversion
    few_ref = crop_faces(img, boxes[:3], None, spec, color_cache={"gray": gray})
    assert np.abs(few.astype(int) - few_ref.astype(int)).max() <= 1
    assert np.abs(few.astype(int) - few_ref.astype(int)).mean() < 0.3
    many = crop_faces(img, boxes, None, spec)  # 40 faces: the whole frame is converted once
    np.testing.assert_array_equal(many, crop_faces(gray, boxes, None, spec))


def test_a_big_face_is_box_averaged_down_not_aliased():
    """A 400 px face (camera noise of std 40 on a flat gray) shrunk to 48 px: the crop averages the
    noise (std about 40 / 8) where one bilinear warp keeps most of it; a bright disc lands where
    the face's affine maps it (the averaged region is centred as the plain warp's pixels are)."""
    rng = np.random.default_rng(0)
    frame = np.clip(128 + rng.normal(0, 40, (600, 600)), 0, 255).astype(np.uint8)
    box = np.array([[100, 120, 500, 520]], np.float32)
    spec = InputSpec(size=[48, 48], color="gray")
    m = face_affine(box[0], None, (48, 48), 0.95, align=False)
    plain = cv2.warpAffine(frame, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    crop = crop_faces(frame, box, None, spec, raw=True)[0, :, :, 0]
    assert plain.std() > 15 and crop.std() < 8, (plain.std(), crop.std())
    assert abs(float(crop.mean()) - float(plain.mean())) < 2

    for want in ((30.0, 17.0), (10.3, 40.6)):  # a bright disc lands where the affine maps its centre (< 0.1 px)
        spot = np.zeros((600, 600), np.uint8)
        cx, cy = np.rint(np.linalg.solve(m[:, :2], np.array(want) - m[:, 2]))
        cv2.circle(spot, (int(cx), int(cy)), 12, 255, -1)
        ex, ey = m @ np.array([cx, cy, 1.0])
        img = crop_faces(spot, box, None, spec, raw=True)[0, :, :, 0]
        ys, xs = np.nonzero(img > 0)
        w = img[ys, xs].astype(float)
        assert abs((xs * w).sum() / w.sum() - ex) < 0.1 and abs((ys * w).sum() / w.sum() - ey) < 0.1


def test_prefiltered_crop_matches_the_plain_warp_on_smooth_content_even_at_the_edge():
    """On a smooth frame (nothing to alias) the box-averaged crop of a big, tilted face equals the
    plain bilinear warp up to rounding, in the middle of the frame and half outside it (where the
    region is cut at the frame's edge and the warp replicates it)."""
    yy, xx = np.mgrid[0:720, 0:1280].astype(np.float32)
    frame = (128 + 60 * np.sin(xx / 90.0) * np.cos(yy / 70.0)).astype(np.uint8)
    frame = cv2.merge([frame, (255 - frame), frame // 2])
    for color, want in (("gray", cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)), ("rgb", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))):
        spec = InputSpec(size=[48, 48], color=color)  # gray: converted per crop; rgb: the converted frame
        for box in ([500, 150, 800, 450], [1100, -120, 1400, 180], [-150, 500, 150, 800]):
            b = np.array([box], np.float32)
            x1, y1, x2, _ = box
            lm = np.array([[[x1 + 90, y1 + 120], [x2 - 90, y1 + 160], [0, 0], [0, 0], [0, 0]]], np.float32)
            m = face_affine(b[0], lm[0], (48, 48), 0.95, align=True)
            plain = cv2.warpAffine(want, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            crop = crop_faces(frame, b, lm, spec, raw=True)[0]
            diff = np.abs(crop.astype(int) - plain.reshape(crop.shape).astype(int))
            assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (color, box, diff.mean(), diff.max())


def test_dataset_faces_shrink_by_area_and_grow_bilinear():
    rng = np.random.default_rng(1)
    spec = InputSpec(size=[48, 48], color="gray", dtype="uint8", layout="NHWC")
    big, small = rng.integers(0, 256, (1, 240, 240), np.uint8), rng.integers(0, 256, (1, 32, 32), np.uint8)
    np.testing.assert_array_equal(resize_faces(big, spec)[0, :, :, 0], cv2.resize(big[0], (48, 48), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize_faces(small, spec)[0, :, :, 0],
                                  cv2.resize(small[0], (48, 48), interpolation=cv2.INTER_LINEAR))


def test_face_affine_centres_the_box():
    m = face_affine(np.array([10, 20, 50, 60], np.float32), None, (64, 64), 1.0, align=False)
    centre = m @ np.array([30, 40, 1.0])
    np.testing.assert_allclose(centre, [32, 32], atol=1e-6)


def test_resize_faces_layouts():
    imgs = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    x = resize_faces(imgs, InputSpec(size=[64, 64], color="gray"))
    assert x.shape == (3, 64, 64, 1) and x.dtype == np.uint8
    y = resize_faces(imgs, InputSpec(size=[48, 48], color="rgb", dtype="float32", layout="NCHW", mean=[0.0], std=[255.0]))
    assert y.shape == (3, 3, 48, 48) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], imgs / 255.0, rtol=1e-6)


def test_sources_reject_bad_input(tmp_path):
    with pytest.raises(EdgeferError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(EdgeferError, match="cannot read image"):
        open_source(str(bad))
    badv = tmp_path / "broken.mp4"
    badv.write_bytes(b"\x00" * 1000)
    with pytest.raises(EdgeferError, match="cannot read video"):
        open_source(str(badv))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeferError, match="no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(EdgeferError, match="cannot open camera"):
        open_source(None, camera=97)
    with pytest.raises(EdgeferError, match="no source"):
        open_source(None)
