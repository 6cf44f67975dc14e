"""``--backend auto`` for an artifact several runtimes can run: the faster one here, by measurement.

An ONNX artifact runs on ONNX Runtime and on OpenVINO (which reads the same ``.onnx``). Which is
faster depends on the model, the input shape, the CPU, the thread setting and the runtime
versions, so ``auto`` does not guess: it loads each installed candidate with the options it
would run with, times it on the shapes the video loop feeds (the detector on a 16:9 frame at its
default size, 640x360, and at half that; a classifier at batch 1 and at a typical batch of 8),
and keeps the faster one. The candidates' calls are interleaved in short slices (A B B A ...)
and medians are kept, so a burst of load from another process on a shared machine falls on all
of them alike instead of being read as one runtime being slow. The first candidate of
``AUTO_ORDER`` (ONNX Runtime, the reference) keeps the job unless another is faster by more
than ``MARGIN``: switching runtimes over a difference inside the noise would only make results
differ between machines for nothing.

The measurement costs one to two seconds (OpenVINO compiling the model is most of it) and runs
once per machine + model + runtime versions: the winner is cached in
``<cache_dir>/backend-auto.json``, keyed by the model's sha256 digest, the CPU (model name and a
hash of its flags), the cores this process may use, the thread and runtime options, the runtime
versions and edgefer's. The file is written atomically; a corrupt, foreign or oversized cache
file is ignored and rewritten, never a traceback; an unwritable cache folder only means the
next run measures again.

The choice and its numbers are in ``Backend.info()["auto"]`` (so in ``edgefer run``'s summary
under ``detector`` / ``classifier``). ``EDGEFER_AUTO=first`` (or the backend option
``auto="first"``) restores the old rule, the first installed runtime of ``AUTO_ORDER``;
``EDGEFER_AUTO=remeasure`` measures again and overwrites the cached entry. An explicitly named
backend never measures.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import stat
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..artifact import Artifact, _norm, cache_dir, sha256_file
from ..errors import EdgeferError
from .base import check_threads
from .registry import REGISTRY, construct

log = logging.getLogger(__name__)

#: how ``auto`` picks among several installed runtimes (option ``auto=`` or ``$EDGEFER_AUTO``)
MODES = ("measure", "first", "remeasure")
AUTO_ENV = "EDGEFER_AUTO"
CACHE_NAME = "backend-auto.json"
#: bump when the measurement or a backend's runtime configuration changes: older entries then miss
CACHE_VERSION = 2
#: seconds of timed calls per candidate, all probe inputs together (warm-up not counted)
BUDGET_S = 0.3
WARMUP_CALLS = 3
#: at least this many timed calls per candidate and input, whatever the budget (a slow detector)
MIN_SAMPLES = 5
#: interleaving: each candidate's budget is cut into this many slices, alternating candidates
SLICES = 6
#: a challenger must beat the first candidate of AUTO_ORDER by this fraction to replace it
MARGIN = 0.05
#: the "typical batch" a classifier is also timed at (a crowd's faces in one call)
TYPICAL_BATCH = 8
#: the whole measurement stops past this many seconds (a model so slow that timing it would
#: stall start-up); the reference runtime then runs it, and that is cached like a measurement
MAX_MEASURE_S = 10.0
#: a probe input larger than this is not built (a crafted manifest with an 8192x8192 input)
MAX_PROBE_BYTES = 64 << 20
#: a cache file larger than this is not read (it holds a few hundred bytes per model)
MAX_CACHE_BYTES = 1 << 20
MAX_ENTRIES = 256
#: what of a cache entry ``info()["auto"]`` shows (the entry also keeps CPU ms, call counts, the key)
INFO_KEYS = ("chosen", "rule", "measured_ms", "per_input_ms", "skipped")
#: the import name of each runtime a candidate needs (checked without importing it)
RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "coreml": "coremltools"}
#: environment variables the backends read that change what they run, so part of the key
RUNTIME_ENV = ("EDGEFER_ORT_SPIN", "EDGEFER_OV_DEVICE", "EDGEFER_OV_PRECISION", "EDGEFER_OV_PINNING")


def auto_mode(option: Any = None) -> str:
    """The ``auto`` rule asked for: the option if given, else ``$EDGEFER_AUTO``, else ``measure``."""
    raw = option if option not in (None, "") else os.environ.get(AUTO_ENV, "")
    mode = str(raw).strip().lower() or "measure"
    if mode not in MODES:
        where = "EDGEFER_AUTO" if option in (None, "") else "the auto option"
        raise EdgeferError(f"{where} must be one of {', '.join(MODES)}, not {raw!r}")
    return mode


# ---------------------------------------------------------------------------- the cache key
def cpu_identity() -> dict[str, Any]:
    """The CPU as far as it changes which runtime is faster: model name, a hash of its feature
    flags (AVX-512, VNNI, AMX...), the cores this process may use, and the architecture."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            text = f.read(4 << 20).decode("utf-8", "replace")
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if not name and key in ("model name", "hardware", "cpu model"):
                name = value.strip()
            elif not flags and key in ("flags", "features"):
                flags = " ".join(sorted(value.split()))
            if name and flags:
                break
    except OSError:
        pass
    if not name:
        name = platform.processor() or platform.machine() or "unknown"
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {
        "cpu": name,
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16] if flags else "",
        "cores": cores,
        "arch": platform.machine(),
        "system": platform.system(),
    }


def installed(name: str) -> bool:
    """Whether the runtime behind backend ``name`` is installed, without importing it (importing
    OpenVINO costs most of a second, wasted when the cache says ONNX Runtime wins)."""
    mod = RUNTIME_MODULE.get(name)
    try:
        return mod is not None and importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def runtime_version(name: str) -> str:
    """The version of the runtime behind backend ``name``, from package metadata where it can
    (no import), else from the imported module."""
    mod = RUNTIME_MODULE.get(name, name)
    for dist in (mod, f"{mod}-gpu", f"{mod}-openvino", f"{mod}-directml"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        fn = getattr(importlib.import_module(REGISTRY[name][0]), "runtime_version", None)
        return str(fn()) if fn else "?"
    except Exception:  # a runtime that cannot say: the key still separates it from one that can
        return "?"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    return repr(v)


def model_digest(art: Artifact) -> str:
    """The sha256 of the model file as the manifest records it (load() has checked it), with the
    digests of the files beside it (external weights) folded in when there are any."""
    sums = {_norm(k): v for k, v in art.manifest.checksums.items()}
    rel = _norm(str(art.manifest.files["model"]))
    main = sums.get(rel) or sha256_file(art.model_path)
    others = sorted((k, v) for k, v in sums.items() if k != rel)
    if not others:
        return main
    return main + "+" + hashlib.sha256(json.dumps(others).encode()).hexdigest()[:16]


def cache_key(art: Artifact, candidates: list[str], options: dict[str, Any], probes: list[str]) -> tuple[str, dict[str, Any]]:
    """(id, key): what must match for a cached choice to hold on this run."""
    m = art.manifest
    opts = {k: _jsonable(v) for k, v in options.items() if k != "threads"}
    key = {
        "edgefer": f"{__version__}/{CACHE_VERSION}",  # how edgefer configures the runtimes may change
        "model": model_digest(art),
        "kind": m.kind,
        "precision": m.precision,
        "candidates": list(candidates),
        "versions": {c: runtime_version(c) for c in candidates},
        "machine": cpu_identity(),
        "threads": check_threads(options.get("threads")) or 0,
        "options": opts,
        "env": {k: os.environ[k] for k in RUNTIME_ENV if os.environ.get(k)},
        "probes": probes,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32], key


# ---------------------------------------------------------------------------- the cache file
def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def read_cache(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The cached entries, or ``{}`` for a missing, unreadable, oversized, corrupt or foreign file
    (it is rewritten on the next measurement)."""
    path = path or cache_path()
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CACHE_BYTES:
            if os.path.lexists(path):
                log.debug("backend auto cache %s is not a small regular file: ignored", path)
            return {}
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_CACHE_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        if not isinstance(e, FileNotFoundError):
            log.debug("backend auto cache %s unreadable (%s): ignored", path, e)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items() if isinstance(k, str) and isinstance(v, dict)}


def write_cache(entries: dict[str, dict[str, Any]], path: Path | None = None) -> bool:
    """Write ``entries`` atomically (temporary file in the same folder, fsync, rename), the most
    recent MAX_ENTRIES kept. False (logged, never raised) when the folder is not writable."""
    path = path or cache_path()
    if len(entries) > MAX_ENTRIES:
        newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("when", "")), reverse=True)[:MAX_ENTRIES]
        entries = dict(newest)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".backend-auto-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.debug("cannot write backend auto cache %s: %s", path, e)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def _valid_entry(entry: dict[str, Any], candidates: list[str]) -> bool:
    ms = entry.get("measured_ms")
    return (
        entry.get("chosen") in candidates
        and isinstance(ms, dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in ms.values())
    )


# ---------------------------------------------------------------------------- measuring
def probe_inputs(art: Artifact) -> list[tuple[str, np.ndarray]]:
    """(label, batch) pairs the candidates are timed on: the shapes the video loop feeds.

    Detector: a frame at its default size (long side ``detector.default_size``, 640) in 16:9, the
    shape of a 720p or 1080p camera's frame, and the same at half that size: the adaptive loop
    detects at the full size every so often and in between at the smallest size the tracked
    faces allow, where a runtime's fixed cost per call weighs more. A fixed-size graph: its own
    size. Classifier: batch 1 (one face) and batch ``TYPICAL_BATCH`` (a crowd). A graph with a
    fixed batch is fed that batch. Inputs above MAX_PROBE_BYTES are left out.
    """
    from ..align import layout
    from ..selfcheck import sample_image

    m = art.manifest
    spec = m.input
    if spec.size:
        sizes = [(int(spec.size[0]), int(spec.size[1]))]
    elif m.kind == "detector":
        side = int((m.detector or {}).get("default_size") or 640)
        side = max(64, min(side, 4096))
        sizes = [(max(32, round(s * 9 / 16)), s) for s in (side, side // 2)]
    else:
        return []
    if isinstance(spec.batch, int):
        batches = (int(spec.batch),)
    else:
        batches = (1,) if m.kind == "detector" else (1, TYPICAL_BATCH)
    itemsize = 4 if spec.dtype == "float32" else 1
    out = []
    for h, w in sizes:
        for b in batches:
            if b * h * w * spec.channels * itemsize > MAX_PROBE_BYTES:
                continue
            x = layout(np.repeat(sample_image(h, w, spec.channels)[None], b, axis=0), spec)
            out.append(("x".join(str(d) for d in x.shape), x))
    return out


class TooSlow(Exception):
    """The measurement ran past its deadline (MAX_MEASURE_S)."""


def _time_calls(backend: Any, x: np.ndarray, seconds: float, wall: list[float], cpu: list[float], deadline: float,
                min_calls: int = 1) -> None:
    """Time calls of ``backend.run(x)`` for about ``seconds`` (at least ``min_calls``)."""
    end = time.perf_counter() + seconds
    n = 0
    while n < min_calls or time.perf_counter() < end:
        c0, t0 = time.process_time(), time.perf_counter()
        backend.run(x)
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append((t1 - t0) * 1e3)
        cpu.append((c1 - c0) * 1e3)
        n += 1
        if t1 > deadline:
            raise TooSlow(f"timing took over {MAX_MEASURE_S:g} s")


def measure(backends: dict[str, Any], probes: list[tuple[str, np.ndarray]], budget_s: float | None = None) -> dict[str, Any]:
    """Median wall and process-CPU milliseconds per call of each backend on each probe input,
    the candidates interleaved in slices so that outside load falls on all of them alike.
    ``budget_s``: timed seconds per candidate, all inputs together (default BUDGET_S)."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    deadline = time.perf_counter() + max(MAX_MEASURE_S, 2 * budget_s * len(backends))
    names = list(backends)
    wall: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    cpu: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    slice_s = budget_s / max(1, len(probes)) / SLICES
    for label, x in probes:
        for n in names:
            wall[n][label], cpu[n][label] = [], []
            _time_calls(backends[n], x, 0.0, [], [], deadline, WARMUP_CALLS)  # warm-up, not kept
        for r in range(SLICES):
            for n in names if r % 2 == 0 else names[::-1]:
                _time_calls(backends[n], x, slice_s, wall[n][label], cpu[n][label], deadline)
        for n in names:  # a slow model: top up to MIN_SAMPLES calls each, still alternating
            while len(wall[n][label]) < MIN_SAMPLES:
                _time_calls(backends[n], x, 0.0, wall[n][label], cpu[n][label], deadline)
    return {
        "wall": {n: {lb: statistics.median(v) for lb, v in d.items()} for n, d in wall.items()},
        "cpu": {n: {lb: statistics.median(v) for lb, v in d.items()} for n, d in cpu.items()},
        "calls": {n: {lb: len(v) for lb, v in d.items()} for n, d in wall.items()},
    }


def score(per_probe: dict[str, float]) -> float:
    """One number per candidate: the geometric mean of its per-input medians, so batch 1 and
    batch 8 weigh alike however many milliseconds each takes."""
    vals = [max(v, 1e-6) for v in per_probe.values()]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else math.inf


def decide(scores: dict[str, float], order: list[str], margin: float = MARGIN) -> str:
    """The first of ``order`` unless another is faster by more than ``margin``; then the fastest."""
    first = order[0]
    best = min(order, key=lambda n: scores.get(n, math.inf))
    if best != first and first in scores and scores[best] >= scores[first] * (1.0 - margin):
        return first
    return best


# ---------------------------------------------------------------------------- the choice
def _construct(name: str, art: Artifact, options: dict[str, Any]) -> Any:
    return construct(name, art.manifest.target, art, options)


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


def _r(v: float) -> float:
    return round(float(v), 3)


def _store(path: Path, key_id: str, entry: dict[str, Any]) -> bool:
    entries = read_cache(path)  # read again: another process may have added entries meanwhile
    entries[key_id] = entry
    return write_cache(entries, path)


def select(art: Artifact, order: tuple[str, ...] | list[str], mode: str, options: dict[str, Any]) -> Any | None:
    """The backend ``auto`` runs ``art`` on, with ``info()["auto"]`` saying why; None when fewer
    than two candidates are installed (the caller then takes the first available, silently)."""
    target = art.manifest.target
    candidates = [c for c in order if target in REGISTRY[c][2] and installed(c)]
    if len(candidates) < 2:
        return None
    probes = probe_inputs(art)
    if not probes:  # nothing sensible to time it on (an oversized fixed input): the reference runs it
        b = _construct(candidates[0], art, options)
        b.auto = {"chosen": candidates[0], "rule": "not measured: no probe input fits the measuring budget"}
        return b
    labels = [lb for lb, _ in probes]
    key_id, key = cache_key(art, candidates, options, labels)
    path = cache_path()
    if mode != "remeasure":
        entry = read_cache(path).get(key_id)
        if entry is not None and _valid_entry(entry, candidates):
            try:
                b = _construct(entry["chosen"], art, options)
            except Exception as e:  # the winner no longer loads: measure again among those that do
                log.debug("cached auto choice %s fails to load (%s): measuring again", entry["chosen"], e)
            else:
                b.auto = {k: entry[k] for k in INFO_KEYS if k in entry}
                b.auto["cached"] = True
                return b
    # load the reference first: its errors are the ones the user sees for a broken artifact
    loaded: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    first = candidates[0]
    loaded[first] = _construct(first, art, options)
    for c in candidates[1:]:
        try:
            loaded[c] = _construct(c, art, options)
        except Exception as e:  # a challenger that cannot load this artifact simply does not compete
            skipped[c] = _one_line(e)
    if len(loaded) < 2:
        # cached too: a runtime that cannot compile this model is not retried on every run
        # (a new runtime version changes the key, and gets its chance)
        entry = {"chosen": first, "rule": "only loadable", "measured_ms": {}, "skipped": skipped,
                 "artifact": art.describe(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "key": key}
        _store(path, key_id, entry)
        b = loaded[first]
        b.auto = {k: entry[k] for k in INFO_KEYS if k in entry}
        b.auto["cached"] = False
        return b
    t0 = time.perf_counter()
    try:
        res = measure(loaded, probes)
    except TooSlow as e:  # keep the reference; cached, so start-up does not stall on every run
        entry = {"chosen": first, "rule": f"not measured: {e}", "measured_ms": {},
                 "artifact": art.describe(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "key": key}
        _store(path, key_id, entry)
        loaded = {first: loaded[first]}
        b = loaded[first]
        b.auto = {k: entry[k] for k in INFO_KEYS if k in entry}
        b.auto["cached"] = False
        return b
    except Exception as e:  # a run that fails on the probe: keep the reference, let the self-check speak
        log.debug("auto measurement of %s failed: %s", art.describe(), e)
        for n in list(loaded):
            if n != first:
                del loaded[n]
        b = loaded[first]
        b.auto = {"chosen": first, "rule": f"measurement failed: {_one_line(e)}"}
        return b
    spent = time.perf_counter() - t0
    scores = {n: score(res["wall"][n]) for n in loaded}
    chosen = decide(scores, [c for c in candidates if c in loaded])
    entry = {
        "chosen": chosen,
        "rule": "measured",
        "how": f"median ms per call, geometric mean over the inputs; {first} kept unless beaten by more than {MARGIN:.0%}",
        "measured_ms": {n: _r(s) for n, s in scores.items()},
        "per_input_ms": {lb: {n: _r(res["wall"][n][lb]) for n in loaded} for lb in labels},
        "cpu_ms": {lb: {n: _r(res["cpu"][n][lb]) for n in loaded} for lb in labels},
        "calls": {lb: {n: res["calls"][n][lb] for n in loaded} for lb in labels},
        "measure_s": _r(spent),
        "artifact": art.describe(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "key": key,
    }
    if skipped:
        entry["skipped"] = skipped
    written = _store(path, key_id, entry)
    log.info("backend auto for %s: %s (%s)", art.describe(), chosen,
             ", ".join(f"{n} {s:.2f} ms" for n, s in scores.items()))
    b = loaded.pop(chosen)
    loaded.clear()  # release the losers' sessions now, not at the next garbage collection
    b.auto = {k: entry[k] for k in INFO_KEYS if k in entry}
    b.auto["cached"] = False
    if not written:
        b.auto["cache"] = "not written (cache folder not writable)"
    return b
