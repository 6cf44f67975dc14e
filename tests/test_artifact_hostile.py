"""Artifacts are untrusted input (issue 12, items 11-14): hostile manifests and model files.

Every case is built in a temp folder from the bundled models and goes through the real CLI
(`python -m edgefer info|run`, a subprocess with a timeout, so a hang fails instead of
blocking) or the real loader: paths outside the folder, FIFOs and devices, missing checksums,
fields of the wrong type or range (refused alike by the runtime and by jsonschema against
edgefer/manifest_schema.json), deep JSON, an input colour the graph cannot take, and NaN
weights (refused at load, by `edgefer info`, and by export validation).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefer import artifact
from edgefer.artifact import ASSETS, Artifact, InputSpec, Manifest, write_artifact
from edgefer.errors import EdgeferError

SCHEMA = json.loads((Path(artifact.__file__).parent / "manifest_schema.json").read_text())
PHOTO = Path(os.environ.get("EDGEFER_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data/photos/obama-720p.jpg"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True, text=True, timeout=timeout)


def _refused(r: subprocess.CompletedProcess, needle: str) -> str:
    """Exit 2, exactly one line on stderr holding ``needle``, no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert needle in lines[0], lines[0]
    return lines[0]


def _copy(name: str, dest: Path) -> tuple[Path, dict]:
    """A bundled artifact copied to ``dest`` (model + manifest.json); returns (dest, manifest dict)."""
    src = artifact.load(name)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src.model_path, dest / src.model_path.name)
    d = json.loads(src.manifest_path.read_text())
    (dest / "manifest.json").write_text(json.dumps(d))
    return dest, d


def _write(dest: Path, d: dict) -> Path:
    (dest / "manifest.json").write_text(json.dumps(d))
    return dest


@pytest.fixture()
def mx(tmp_path):
    return _copy("mini-xception", tmp_path / "mx")


# ----------------------------------------------------------------------------- item 12: paths confined
@pytest.mark.parametrize("model, needle", [
    ("/etc/passwd", "files.model must be a relative path"),
    ("../../x.onnx", "files.model must be a relative path"),
    ("sub/../../x.onnx", "files.model must be a relative path"),
])
def test_model_path_outside_the_folder_is_refused(mx, model, needle):
    root, d = mx
    d["files"]["model"] = model
    d["checksums"] = {model: d["checksums"]["mini_xception.onnx"]}
    _refused(_cli("info", str(_write(root, d))), needle)


def test_symlink_out_of_the_folder_is_refused(mx, tmp_path):
    root, d = mx
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(root / "mini_xception.onnx", outside)  # a perfectly good model, but not in the artifact
    os.symlink(outside, root / "link.onnx")
    d["files"]["model"] = "link.onnx"
    d["checksums"] = {"link.onnx": d["checksums"]["mini_xception.onnx"]}
    _refused(_cli("info", str(_write(root, d))), "outside the artifact folder")


def test_checksum_key_of_dev_zero_does_not_hang(mx):
    root, d = mx
    d["checksums"]["/dev/zero"] = "sha256:" + "0" * 64
    _refused(_cli("info", str(_write(root, d)), timeout=30), "checksums key \"/dev/zero\" must be a relative path")
    # the same through a symlink inside the folder: resolved, found outside, never opened
    del d["checksums"]["/dev/zero"]
    os.symlink("/dev/zero", root / "zero")
    d["checksums"]["zero"] = "sha256:" + "0" * 64
    _refused(_cli("info", str(_write(root, d)), timeout=30), "outside the artifact folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("command", ["info", "run"])
def test_fifo_as_model_file_does_not_hang(mx, command):
    root, d = mx
    os.mkfifo(root / "fifo.onnx")
    d["files"]["model"] = "fifo.onnx"
    d["checksums"] = {"fifo.onnx": d["checksums"]["mini_xception.onnx"]}
    _write(root, d)
    args = ["info", str(root)] if command == "info" else ["run", str(PHOTO), "--classifier", str(root), "--no-display"]
    if command == "run" and not PHOTO.exists():
        pytest.skip(f"{PHOTO} not found")
    _refused(_cli(*args, timeout=30), "is a FIFO, not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_manifest_and_folder_model_are_refused(tmp_path, mx):
    os.mkfifo(tmp_path / "m.json")
    _refused(_cli("info", str(tmp_path / "m.json"), timeout=30), "is a FIFO, not a regular file")
    root, d = mx
    (root / "dir.onnx").mkdir()
    d["files"]["model"] = "dir.onnx"
    d["checksums"] = {"dir.onnx": d["checksums"]["mini_xception.onnx"]}
    _refused(_cli("info", str(_write(root, d))), "is a folder, not a regular file")


def test_runtime_confines_paths_without_the_schema(tmp_path):
    """A Manifest built in Python (no JSON, no schema pass) is still confined when verified."""
    (tmp_path / "m.onnx").write_bytes(b"x")
    for bad in ("/etc/passwd", "../m.onnx", "a/../../m.onnx"):
        man = Manifest(name="m", kind="classifier", files={"model": bad}, classes=["a"], input=InputSpec(size=[8, 8]),
                       checksums={bad: "sha256:" + "0" * 64})
        with pytest.raises(EdgeferError, match="not a relative path inside the artifact folder"):
            Artifact(man, tmp_path).verify()
    # and sha256_file never reads a device (a subprocess: reading /dev/zero would never end)
    code = ("from edgefer.artifact import sha256_file\nfrom edgefer.errors import EdgeferError\n"
            "try:\n    sha256_file('/dev/zero')\nexcept EdgeferError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "is not a regular file (a character device)" in r.stdout, r.stdout + r.stderr


# ----------------------------------------------------------------------------- item 13: checksums mandatory
def test_empty_checksums_with_flipped_weights_are_refused(mx):
    root, d = mx
    data = bytearray((root / "mini_xception.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "mini_xception.onnx").write_bytes(bytes(data))
    d["checksums"] = {}
    _write(root, d)
    _refused(_cli("info", str(root)), "file mini_xception.onnx (model) has no checksum in the manifest")
    if PHOTO.exists():
        _refused(_cli("run", str(PHOTO), "--classifier", str(root), "--no-display"), "has no checksum in the manifest")


def test_files_read_beside_the_model_need_checksums(mx, tmp_path):
    root, d = mx
    (root / "mini_xception.onnx.data").write_bytes(b"external weights")
    with pytest.raises(EdgeferError, match=r"mini_xception.onnx.data beside the model has no checksum"):
        artifact.load(root)
    # write_artifact covers it, and an OpenVINO .bin beside its .xml
    m = Manifest.from_dict(d)
    write_artifact(m, root)
    assert set(m.checksums) == {"mini_xception.onnx", "mini_xception.onnx.data"}
    artifact.load(root)
    ov = tmp_path / "ov"
    ov.mkdir()
    (ov / "model.xml").write_bytes(b"<net/>")
    (ov / "model.bin").write_bytes(b"weights")
    m = Manifest.from_dict({**d, "target": "openvino", "files": {"model": "model.xml"}, "checksums": {}})
    write_artifact(m, ov)
    assert set(m.checksums) == {"model.xml", "model.bin"}
    (ov / "model.bin").write_bytes(b"swapped")
    with pytest.raises(EdgeferError, match="model.bin does not match its manifest checksum"):
        artifact.load(ov)
    with pytest.raises(EdgeferError, match="is not in"):
        write_artifact(Manifest.from_dict({**d, "files": {"model": "absent.onnx"}}), ov)


def test_ensemble_members_are_inside_and_checksummed(tmp_path):
    from edgefer.ensemble import write_ensemble

    other, _ = _copy("edgenet-fast", tmp_path / "elsewhere" / "fast")  # a member given by path, outside the ensemble
    path = write_ensemble(["mini-xception", str(other)], "mean", tmp_path / "ens")
    art = artifact.load(path)
    members = art.manifest.files["members"]
    assert all(not m.startswith("..") for m in members) and set(members) <= set(art.manifest.checksums)
    assert all((tmp_path / "ens" / m).is_file() for m in members)
    # a member manifest edited after the fact is caught by the ensemble's own checksum
    mpath = tmp_path / "ens" / members[1]
    mpath.write_text(mpath.read_text().replace('"edgenet-fast"', '"renamed"'))
    with pytest.raises(EdgeferError, match="does not match its manifest checksum"):
        artifact.load(path)
    # and a hand-written ensemble pointing outside its folder is refused
    d = json.loads(path.read_text())
    d["files"]["members"][1] = "../elsewhere/fast/manifest.json"
    path.write_text(json.dumps(d))
    _refused(_cli("info", str(path)), "files.members[1] must be a relative path")


# ----------------------------------------------------------------------------- item 14: types and ranges
def _mx_dict() -> dict:
    return json.loads((ASSETS / "mini_xception.json").read_text())


def _det_dict() -> dict:
    return json.loads((ASSETS / "retinaface_mnet025.json").read_text())


def _patched(base: dict, path: str, value) -> dict:
    d = copy.deepcopy(base)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return d


BAD = [
    # (id, base, dotted field, value, what the runtime's message says)
    ("files-string", _mx_dict, "files", "mini_xception.onnx", "files must be an object"),
    ("classes-string", _mx_dict, "classes", "angry", "needs a list of unique, non-empty class names"),
    ("classes-duplicate", _mx_dict, "classes", ["a", "a", "b", "c", "d", "e", "f"], "class names"),
    ("scale-zero", _mx_dict, "crop.scale", 0, "crop.scale must be > 0"),
    ("scale-negative", _mx_dict, "crop.scale", -1.2, "crop.scale must be > 0"),
    ("scale-nan", _mx_dict, "crop.scale", math.nan, "finite numbers only"),
    ("scale-inf", _mx_dict, "crop.scale", math.inf, "finite numbers only"),
    ("scale-string", _mx_dict, "crop.scale", "1.2", "crop.scale must be a number"),
    ("align-unknown", _mx_dict, "crop.align", "mouth", "crop.align must be one of"),
    ("crop-extra-key", _mx_dict, "crop.angle", 30, "unknown keys in crop"),
    ("steps-zero", _det_dict, "detector.steps", [0, 0, 0], "detector.steps[0] must be >= 1"),
    ("steps-float", _det_dict, "detector.steps", [8.5, 16, 32], "detector.steps[0] must be an integer"),
    ("min-sizes-flat", _det_dict, "detector.min_sizes", [16, 32], "detector.min_sizes[0] must be a list"),
    ("min-sizes-zero", _det_dict, "detector.min_sizes", [[0], [64], [256]], "detector.min_sizes[0][0] must be > 0"),
    ("variances-one", _det_dict, "detector.variances", [0.1], "detector.variances must have at least 2"),
    ("detector-null", _det_dict, "detector", None, "detector must be an object"),
    ("detector-gray", _det_dict, "input", {"name": "image", "dtype": "uint8", "layout": "NHWC", "size": None,
                                           "color": "gray", "mean": [110.0], "std": [1.0]}, "input.color must be one of"),
    ("size-string", _mx_dict, "input.size", "64", "input.size must be a list"),
    ("size-zero", _mx_dict, "input.size", [0, 64], "input.size[0] must be >= 1"),
    ("size-three", _mx_dict, "input.size", [64, 64, 1], "input.size must have at most 2"),
    ("size-null-classifier", _mx_dict, "input.size", None, "a classifier needs a fixed input.size"),
    ("dtype-int", _mx_dict, "input.dtype", 8, "input.dtype must be one of"),
    ("layout-unknown", _mx_dict, "input.layout", "HWC", "input.layout must be one of"),
    ("color-unknown", _mx_dict, "input.color", "cmyk", "input.color must be one of"),
    ("name-int", _mx_dict, "input.name", 3, "input.name must be a string"),
    ("mean-string", _mx_dict, "input.mean", "127.5", "input.mean must be a list"),
    ("mean-two-gray", _mx_dict, "input.mean", [127.5, 127.5], "input.mean"),
    ("std-zero", _mx_dict, "input.std", [0], "input.std[0] must be > 0"),
    ("std-negative", _mx_dict, "input.std", [-127.5], "input.std[0] must be > 0"),
    ("batch-zero", _mx_dict, "input.batch", 0, "input.batch must be \"dynamic\" or a batch size"),
    ("batch-bool", _mx_dict, "input.batch", True, "input.batch must be \"dynamic\" or a batch size"),
    ("input-extra-key", _mx_dict, "input.gamma", 2.2, "unknown keys in input"),
    ("input-string", _mx_dict, "input", "image", "input must be an object"),
    ("checksum-md5", _mx_dict, "checksums", {"mini_xception.onnx": "md5:abc"}, "must be sha256:<64"),
    ("checksums-list", _mx_dict, "checksums", ["mini_xception.onnx"], "checksums must be an object"),
    ("output-unknown", _mx_dict, "output", "scores", "output must be one of"),
    ("target-mixed-single", _mx_dict, "target", "mixed", "target must be one of"),
    ("kind-unknown", _mx_dict, "kind", "regressor", "kind must be one of"),
    ("name-empty", _mx_dict, "name", "", "name must not be empty"),
    ("extra-list", _mx_dict, "extra", [], "extra must be an object"),
    ("cam-output-missing", _mx_dict, "extra.cam", {"shape": [7, 4, 4]}, "extra.cam lacks 'output'"),
    ("ensemble-rule", _mx_dict, "extra.ensemble", {"rule": "max"}, "extra.ensemble.rule must be one of"),
]


@pytest.fixture(scope="module")
def jsonschema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def test_every_bundled_manifest_fits_the_schema(jsonschema_validator):
    names = sorted(p.name for p in ASSETS.glob("*.json"))
    assert len(names) == len(artifact.BUNDLED)
    for name in names:
        d = json.loads((ASSETS / name).read_text())
        errors = [e.message for e in jsonschema_validator.iter_errors(d)]
        assert not errors, (name, errors)
        Manifest.from_dict(d)  # and the runtime's reading of the same file agrees


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_manifest_refused_by_schema_and_runtime(case, jsonschema_validator):
    _, base, field, value, needle = case
    d = _patched(base(), field, value)
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and Infinity are not JSON: a strict writer cannot produce them and a JSON Schema
        # validator never sees them in a document (jsonschema compares NaN as neither < nor >)
        with pytest.raises(ValueError, match="JSON compliant"):
            json.dumps(d, allow_nan=False)
    else:
        assert list(jsonschema_validator.iter_errors(d)), f"jsonschema accepts {field}={value!r}"
    with pytest.raises(ValueError) as e:
        Manifest.from_dict(d)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", [c for c in BAD if c[0] in ("files-string", "classes-string", "scale-zero", "steps-zero",
                                                          "align-unknown", "size-string", "batch-bool")],
                         ids=lambda c: c[0])
def test_bad_manifest_through_the_cli(case, tmp_path):
    _, base, field, value, needle = case
    name = "retinaface-mnet025" if base is _det_dict else "mini-xception"
    root, _ = _copy(name, tmp_path / "a")
    _refused(_cli("info", str(_write(root, _patched(base(), field, value)))), needle)


def test_rules_the_schema_cannot_say_are_applied_by_the_runtime(jsonschema_validator):
    d = _patched(_det_dict(), "detector.steps", [8, 16])  # 3 feature maps of anchors, 2 strides
    assert not list(jsonschema_validator.iter_errors(d))  # JSON Schema cannot compare two lengths
    with pytest.raises(ValueError, match="detector.steps has 2 entries and detector.min_sizes 3"):
        Manifest.from_dict(d)


def _with_extra_x(text: str, raw: str) -> str:
    """The manifest text with ``"x": raw`` first in ``extra`` (raw JSON too deep to build with json.dumps)."""
    head, tail = text.split('"extra": {', 1)
    assert head != text, "the manifest has no extra object"
    return head + '"extra": {"x": ' + raw + ("" if tail.startswith("}") else ", ") + tail


def test_nonstandard_json_deep_json_and_duplicates(tmp_path, mx):
    root, d = mx
    text = json.dumps(d)
    (root / "manifest.json").write_text(re.sub(r'"scale": [0-9.]+', '"scale": NaN', text, count=1))
    _refused(_cli("info", str(root)), "NaN is not a JSON number")
    (root / "manifest.json").write_text(text.replace('"license": "MIT"', '"license": "MIT", "license": "GPL"'))
    _refused(_cli("info", str(root)), "key 'license' appears twice")
    deep = "[" * 100_000 + "]" * 100_000
    (root / "manifest.json").write_text(_with_extra_x(text, deep))
    _refused(_cli("info", str(root)), "nests too deep")
    nested = "[" * 40 + "]" * 40  # readable, but deeper than a manifest may be
    (root / "manifest.json").write_text(_with_extra_x(text, nested))
    _refused(_cli("info", str(root)), "nests deeper than 32 levels")
    (root / "manifest.json").write_bytes(b" " * (artifact.MAX_MANIFEST_BYTES + 1))
    _refused(_cli("info", str(root)), "a manifest is at most")


def test_input_colour_that_does_not_fit_the_graph(mx):
    """Valid by the schema (bgr with one mean for all channels), wrong for a 1-channel graph."""
    root, d = mx
    d["input"]["color"] = "bgr"
    _write(root, d)
    artifact.load(root)  # the manifest alone is fine
    _refused(_cli("info", str(root)), "input.color 'bgr' means 3 channels (NHWC), the graph's input has 1")
    if PHOTO.exists():
        _refused(_cli("run", str(PHOTO), "--classifier", str(root), "--no-display"), "the graph's input has 1")


def test_detector_priors_that_do_not_fit_its_heads(tmp_path):
    root, d = _copy("retinaface-mnet025", tmp_path / "det")
    d["detector"]["steps"] = [8, 16, 64]  # valid numbers, wrong for this graph's third head
    _refused(_cli("info", str(_write(root, d))), "does not fit its manifest")


def test_schema_reader_refuses_keywords_it_does_not_apply():
    from edgefer.schemacheck import Validator

    with pytest.raises(TypeError, match="does not apply"):
        Validator({"type": "object", "dependentRequired": {"a": ["b"]}})


# ----------------------------------------------------------------------------- item 11: non-finite outputs
def _poisoned(name: str, dest: Path, initializer: str, value: float) -> Path:
    """A copy of a bundled model with one initializer set to ``value``, with correct checksums."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    src = artifact.load(name)
    model = onnx.load(str(src.model_path))
    init = next(i for i in model.graph.initializer if i.name == initializer)
    arr = numpy_helper.to_array(init).copy()
    arr[...] = value
    init.CopyFrom(numpy_helper.from_array(arr, initializer))
    dest.mkdir(parents=True)
    onnx.save(model, str(dest / src.model_path.name))
    m = Manifest.from_dict(json.loads(src.manifest_path.read_text()))
    write_artifact(m, dest)  # checksums right: only the inference can tell
    return dest


@pytest.fixture(scope="module")
def nan_classifier(tmp_path_factory):
    return _poisoned("mini-xception", tmp_path_factory.mktemp("nan") / "mx", "model.classifier.bias", float("nan"))


def test_nan_classifier_is_refused_by_info_and_run(nan_classifier):
    artifact.load(nan_classifier)  # manifest and checksums are fine
    _refused(_cli("info", str(nan_classifier)), "non-finite values (NaN/Inf)")
    if not PHOTO.exists():
        pytest.skip(f"{PHOTO} not found")
    _refused(_cli("run", str(PHOTO), "--classifier", str(nan_classifier), "--no-display"), "non-finite values (NaN/Inf)")


def test_inf_detector_is_refused_at_load(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(artifact.load("retinaface-mnet025").model_path))
    conv_w = next(i.name for i in model.graph.initializer if len(i.dims) == 4)  # the first conv's weights
    root = _poisoned("retinaface-mnet025", tmp_path / "det", conv_w, float("inf"))
    from edgefer.detect import FaceDetector

    with pytest.raises(EdgeferError, match="non-finite"):
        FaceDetector(str(root))


def test_export_validation_refuses_non_finite(nan_classifier):
    pytest.importorskip("onnx")
    from edgefer.export.validate import check_artifact, compare

    ref = np.eye(3, dtype=np.float32)
    assert compare(ref, ref)["agreement"] == 1.0
    bad = ref.copy()
    bad[1, 0] = np.nan
    with pytest.raises(EdgeferError, match="NaN/Inf on 1 of 3 inputs"):
        compare(bad, ref)
    with pytest.raises(EdgeferError, match="FP32 reference"):
        compare(ref, bad)
    assert "finite" in check_artifact(artifact.ASSETS / "mini_xception.json")
    with pytest.raises(EdgeferError, match="non-finite"):
        check_artifact(nan_classifier)


def test_export_refuses_a_nan_model_and_writes_nothing(nan_classifier, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "out"
    _refused(_cli("-q", "export", str(nan_classifier), "--target", "onnx", "-o", str(out), timeout=300),
             "non-finite values (NaN/Inf)")
    assert not out.exists()


def test_schema_enums_match_the_runtime_constants():
    """The schema is the one list of kinds, targets and precisions; the constants export uses agree."""
    props = SCHEMA["properties"]
    assert props["kind"]["enum"] == list(artifact.KINDS)
    assert props["target"]["enum"] == [*artifact.TARGETS, "mixed"]
    assert props["precision"]["enum"] == [*artifact.PRECISIONS, "mixed"]
    assert props["schema"]["const"] == artifact.SCHEMA and props["format"]["const"] == artifact.FORMAT
