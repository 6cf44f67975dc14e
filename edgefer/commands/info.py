"""`edgefer info`: print and validate a model artifact."""

from __future__ import annotations

import json

import click

from ..artifact import load


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact")
@click.option("--backend", default="auto", show_default=True, help="Backend used to check that the model loads and fits its manifest.")
@click.option("--no-load", is_flag=True, help="Only validate the manifest and checksums; do not load the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and backend report as JSON.")
def info(artifact, backend, no_load, as_json):
    """Print and validate ARTIFACT (bundled name, artifact folder, manifest or model file).

    \b
    Checks: the manifest schema, file checksums, and (unless --no-load) that the model loads
    on a backend and its inputs and outputs fit the manifest. Exit 2 when any check fails.
    Examples:
      edgefer info mini-xception
      edgefer info out/mini-xception-openvino-int8
    """
    art = load(artifact)
    m = art.manifest
    report = {"manifest": m.to_dict(), "path": str(art.manifest_path), "checksums": "ok"}
    if not no_load:
        from ..backends import open_backend

        b = open_backend(art, backend)
        report["backend"] = b.info()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    i = m.input
    size = f"{i.size[0]}x{i.size[1]}" if i.size else "dynamic"
    click.echo(f"{m.name}  ({m.kind}, arch {m.arch or '-'})")
    click.echo(f"  manifest   {art.manifest_path}")
    click.echo(f"  target     {m.target}   precision {m.precision}")
    click.echo(f"  input      {i.name}: {i.dtype} {i.layout} {size} {i.color}, batch {i.batch}, mean {i.mean} std {i.std}")
    if m.classes:
        click.echo(f"  classes    {', '.join(m.classes)} ({m.output})")
    for role, rel in m.files.items():
        click.echo(f"  file       {role}: {rel}")
    click.echo(f"  checksums  ok ({len(m.checksums)} files)")
    if m.calibration:
        c = m.calibration
        click.echo("  calibration " + ", ".join(f"{k} {v}" for k, v in c.items() if not isinstance(v, (dict, list))))
    if m.provenance:
        src = m.provenance.get("source") or m.provenance.get("upstream")
        if src:
            click.echo(f"  source     {src}")
    click.echo(f"  license    {m.license}")
    if "backend" in report:
        b = report["backend"]
        click.echo("  loads on   " + ", ".join(f"{k} {v}" for k, v in b.items()))
