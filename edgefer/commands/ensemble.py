"""`edgefer ensemble`: write an ensemble artifact from classifier artifacts (edgefer.ensemble)."""

from __future__ import annotations

import shlex

import click

from ..ensemble import RULES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("members", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Ensemble folder (gets manifest.json and a copy of every member under members/).")
@click.option("--rule", type=click.Choice(RULES), default="mean", show_default=True,
              help="mean of the members' probabilities, or max-vote (ties to the highest mean probability).")
@click.option("--name", default=None, help="Name in the manifest (default: ensemble-RULE-MEMBER+MEMBER...).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def ensemble(members, output, rule, name, as_json):
    """Combine classifier artifacts (MEMBERS: folders, manifests, bundled names) into one ensemble
    artifact, which `edgefer run --classifier DIR` and `edgefer bench --artifact DIR` use like any
    classifier. Members may mix backends and precisions; they must predict the same classes.

    \b
    Examples:
      edgefer ensemble -o ens/ --rule vote mini-xception edgenet-fast edgenet
      edgefer ensemble -o ens-mixed/ edgenet edgenet-openvino-int8/
    """
    from ..ensemble import EnsembleClassifier, write_ensemble

    argv = ["edgefer", "ensemble", "-o", output, "--rule", rule, *(["--name", name] if name else []), *members]
    command = " ".join(shlex.quote(a) for a in argv)
    path = write_ensemble(list(members), rule, output, name, command=command)
    clf = EnsembleClassifier(path)  # loads: every member resolves from the written copy
    if as_json:
        import json

        click.echo(json.dumps(clf.manifest.to_dict(), indent=2))
        return
    ens = (clf.manifest.extra or {}).get("ensemble") or {}
    click.echo(f"wrote {path}  ({clf.manifest.name}, rule {rule}, {len(clf.members)} members)")
    for entry, mem in zip(ens.get("members") or [], clf.members):
        info = mem.backend.info()
        click.echo(f"  member  {entry.get('name')}: {entry.get('target')} {entry.get('precision')}, runs on "
                   f"{info.get('backend')} ({info.get('device')}), {entry.get('sha256', '')[:19]}")
