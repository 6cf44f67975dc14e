"""`edgefer info`: print and validate a model artifact.

Readable text by default (``--json`` for the machine form). A TensorRT engine or a Core ML
package is often inspected on the machine that exported it, not on the device that runs it:
there the runtime is missing, so info validates what it can (schema, checksums, the manifest's
input and classes), prints it, names the checks that need the device and why, and exits 0.
The same artifact on its device is loaded and run like any other.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..artifact import Artifact, load
from ..errors import EdgeferError

#: runtime that runs each target which may be absent off its device, and what only it can check
DEVICE_RUNTIMES = {
    "trt": ("tensorrt", "the engine deserialises (or builds from the ONNX) for this GPU and TensorRT version, "
                        "and one inference fits the manifest with finite outputs"),
    "coreml": ("coreml", "the package compiles and loads in Core ML, and one inference fits the manifest "
                         "with finite outputs"),
}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact")
@click.option("--backend", default="auto", show_default=True, help="Backend used to check that the model loads and fits its manifest.")
@click.option("--no-load", is_flag=True, help="Only validate the manifest and checksums; do not load the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and backend report as JSON.")
def info(artifact, backend, no_load, as_json):
    """Print and validate ARTIFACT (bundled name, artifact folder, manifest or model file).

    \b
    Checks: the manifest schema (edgefer/manifest_schema.json), that every file it names lies
    inside the artifact folder and matches its checksum, and (unless --no-load) that the model
    loads on a backend the way `edgefer run` loads it and one inference on a synthetic input
    fits the manifest with finite outputs. A TensorRT or Core ML artifact away from its device
    (no TensorRT / GPU here, or not macOS) is validated as far as this machine can, printed, and
    the checks left for the device are named: exit 0. Exit 2, with one line, when a check fails.
    Examples:
      edgefer info edgenet
      edgefer info out/edgenet-openvino-int8
      edgefer info out/edgenet-trt-fp16          # on the exporting machine: manifest + device checks
    """
    art = load(artifact)
    m = art.manifest
    report: dict[str, Any] = {"manifest": m.to_dict(), "path": str(art.manifest_path), "checksums": "ok"}
    if not no_load:
        missing = device_only(art, backend)
        if missing:
            report["device_checks"] = missing
        else:
            report["backend"] = _load_and_run(art, backend)
            report["inference"] = "ok (one synthetic input, finite outputs)"
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in describe(art, report):
        click.echo(line)


# ----------------------------------------------------------------------------- device-only checks
def _targets(art: Artifact) -> list[tuple[str, str]]:
    """(what, target) of the artifact, or of each member of an ensemble."""
    m = art.manifest
    if m.kind != "ensemble":
        return [(m.name, m.target)]
    out = []
    for rel in m.files.get("members") or []:
        try:
            mm = load(art.root / rel, verify=False).manifest
            out.append((f"member {mm.name} ({rel})", mm.target))
        except EdgeferError:  # the ensemble's own load reports a broken member
            continue
    return out


def device_only(art: Artifact, backend: str) -> list[dict[str, str]]:
    """The checks that need a runtime this machine lacks (TensorRT, Core ML), with the reason;
    empty when everything can be loaded here. Only with ``--backend auto`` or that runtime: a
    backend the user names explicitly is tried, and its failure reported."""
    from ..backends import ALIASES, available

    chosen = ALIASES.get(backend, backend)
    out = []
    for what, target in _targets(art):
        if target not in DEVICE_RUNTIMES:
            continue
        runtime, checks = DEVICE_RUNTIMES[target]
        if chosen not in ("auto", runtime):
            continue
        ok, why = available(runtime)
        if not ok:
            out.append({"what": what, "target": target, "runtime": runtime, "checks": checks, "why_not_here": why})
    return out


def _load_and_run(art: Artifact, backend: str) -> dict:
    """Build the detector or classifier exactly as `edgefer run` does (which runs the load-time
    self-check, edgefer.selfcheck) and return the backend's report. Whatever goes wrong is one
    line: info exists to say whether the artifact works, not to crash on one that does not."""
    try:
        if art.manifest.kind == "detector":
            from ..detect import FaceDetector

            return FaceDetector(art, backend).backend.info()
        from ..classify import EmotionClassifier

        return EmotionClassifier(art, backend).backend.info()
    except EdgeferError:
        raise
    except Exception as e:  # a runtime's own exception types
        lines = str(e).strip().splitlines()
        raise EdgeferError(f"{art.describe()} does not load: {lines[0] if lines else type(e).__name__}") from None


# ----------------------------------------------------------------------------- text
def words(v: Any, depth: int = 0) -> str:
    """A value as text a person reads: no braces, quotes or brackets (nested dicts in parentheses)."""
    if isinstance(v, dict):
        if not v:
            return "-"
        inner = ", ".join(f"{k} {words(x, depth + 1)}" for k, x in v.items())
        return f"({inner})" if depth else inner
    if isinstance(v, (list, tuple)):
        return ", ".join(words(x, depth + 1) for x in v) if v else "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def _backend_lines(b: dict[str, Any], indent: str = "  ") -> list[str]:
    """What ran: backend, device, precision (and what it executes), threads; auto's choice."""
    prec = str(b.get("precision", "-"))
    executes = b.get("executes") or b.get("inference_precision")
    if executes and str(executes) != prec:
        prec += f" (executes {executes})"
    lines = [f"{indent}runs on    {b.get('backend')}, device {b.get('device', 'cpu')}, precision {prec}, "
             f"threads {b.get('threads', 'runtime default')}"]
    auto = b.get("auto")
    if isinstance(auto, dict) and auto.get("chosen"):
        ms = auto.get("measured_ms") or {}
        timing = ", ".join(f"{k} {v} ms" for k, v in ms.items()) if isinstance(ms, dict) else ""
        lines.append(f"{indent}auto       chose {auto['chosen']}" + (f" ({timing})" if timing else "")
                     + (" [cached]" if auto.get("cached") else ""))
    skip = {"backend", "device", "precision", "executes", "threads", "auto", "target", "members", "artifact", "rule"}
    rest = {k: v for k, v in b.items() if k not in skip and v not in (None, "", {}, [])}
    if rest:
        lines.append(f"{indent}runtime    " + "; ".join(f"{k.replace('_', ' ')} {words(v, 1)}" for k, v in rest.items()))
    return lines


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pct(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, dict) else None
    return f"{v:.2f}%" if _num(v) else None


def card_lines(card: dict[str, Any]) -> list[str]:
    """The model card a manifest carries (``extra.card``, benchmarks/model_cards.py): what the model
    was trained and selected on and what it scores, a few lines; absent fields are left out."""
    lines = []
    if card.get("trained_on") or card.get("selected_on"):
        lines.append(f"  card       trained on {words(card.get('trained_on'))}")
        lines.append(f"             selected on {words(card.get('selected_on'))}")
    pt = card.get("publictest")
    if _pct(pt, "top1"):
        rec = pt.get("recall") if isinstance(pt.get("recall"), dict) else {}
        rare = ", ".join(f"{c} recall {rec[c]:.1f}%" for c in ("disgust", "fear")
                         if _num(rec.get(c)))
        lines.append(f"             FER2013 PublicTest top-1 {_pct(pt, 'top1')}"
                     + (f", macro-F1 {_pct(pt, 'macro_f1')}" if _pct(pt, "macro_f1") else "") + (f", {rare}" if rare else ""))
    loop = card.get("through_loop")
    if _pct(loop, "top1_found"):
        gap = loop.get("gap")
        lines.append(f"             through the detector loop {_pct(loop, 'top1_found')}"
                     + (f" (gap to the direct crop {gap:.1f} points)" if _num(gap) else ""))
    if _pct(card.get("ferplus_majority"), "top1"):
        lines.append(f"             FERPlus majority labels top-1 {_pct(card['ferplus_majority'], 'top1')}")
    lat = card.get("latency_ms_per_face_ort_1thread")
    if isinstance(lat, dict) and _num(lat.get("b1")):
        lines.append(f"             {lat['b1']:.2f} ms a face (ONNX Runtime CPU, 1 thread, batch 1, where the card was measured)")
    adj = card.get("adjust")
    if isinstance(adj, dict) and _num(adj.get("tau")):
        lines.append(f"             logit adjustment tau {words(adj.get('tau'))} ({words(adj.get('chosen_by'))})")
    return lines


def describe(art: Artifact, report: dict[str, Any]) -> list[str]:
    """The text form of ``edgefer info``."""
    m = art.manifest
    i = m.input
    size = f"{i.size[0]}x{i.size[1]}" if i.size else "dynamic"
    out = [f"{m.name}  ({m.kind}, arch {m.arch or '-'})",
           f"  manifest   {art.manifest_path}",
           f"  target     {m.target}   precision {m.precision}",
           f"  input      {i.name}: {i.dtype} {i.layout} {size} {i.color}, batch {i.batch}, "
           f"mean {words(i.mean)} std {words(i.std)}"]
    if m.classes:
        out.append(f"  classes    {', '.join(m.classes)} ({m.output})")
    ens = (m.extra or {}).get("ensemble") if m.kind == "ensemble" else None
    if isinstance(ens, dict):
        out.append(f"  rule       {ens.get('rule', 'mean')}")
        for e in ens.get("members") or []:
            if isinstance(e, dict):
                digest = f", manifest {e['sha256'][:19]}..." if isinstance(e.get("sha256"), str) else ""
                out.append(f"  member     {e.get('name')}: {e.get('target')} {e.get('precision')}, arch {e.get('arch') or '-'}"
                           f" ({e.get('path')}{digest})")
    else:
        for role, rel in m.files.items():
            out.append(f"  file       {role}: {words(rel)}")
    out.append(f"  checksums  ok ({len(m.checksums)} files)")
    if m.calibration:
        c = m.calibration
        flat = {k: v for k, v in c.items() if not isinstance(v, (dict, list))}
        out.append("  calibration " + ", ".join(f"{k} {words(v)}" for k, v in flat.items()))
        per = c.get("per_class")
        if isinstance(per, dict) and per:
            out.append("             per class " + words(per))
    extra = m.extra or {}
    if extra.get("check_data"):
        out.append(f"  checked on {extra['check_data']}")
    if m.provenance:
        src = m.provenance.get("source") or m.provenance.get("upstream")
        if isinstance(src, dict):
            src = f"{src.get('ref') or src.get('name')} ({src.get('kind', '-')})"
        if src:
            out.append(f"  source     {src}")
        if isinstance(m.provenance.get("command"), str):
            out.append(f"  command    {m.provenance['command']}")
    out.append(f"  license    {m.license}")
    if isinstance(extra.get("card"), dict):
        out += card_lines(extra["card"])
    if "backend" in report:
        b = report["backend"]
        if isinstance(b, dict) and b.get("backend") == "ensemble":
            out.append(f"  loads on   ensemble of {len(b.get('members') or [])} members, rule {b.get('rule')}")
            for mb in b.get("members") or []:
                out.append(f"    {mb.get('artifact')}:")
                out += _backend_lines(mb, indent="      ")
        elif isinstance(b, dict):
            out += _backend_lines(b)
        out.append(f"  inference  {report['inference']}")
    for d in report.get("device_checks") or []:
        out.append(f"  on device  {d['what']} ({d['target']}): not loaded here, {d['why_not_here']}")
        out.append(f"             on the device, `edgefer info` also checks that {d['checks']}")
    if report.get("device_checks"):
        out.append("  checked here: manifest schema, files inside the folder, checksums")
    return out
