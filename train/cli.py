"""``edgefer train``: train a zoo architecture on FER2013 / FERPlus / RAF-DB / class folders."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from edgefer.errors import EdgeferError

EPILOG = """\b
Examples:
  edgefer train --arch edgenet --data fer2013.csv -o runs/edgenet      # a 10% stratified carve selects
  edgefer train --arch edgenet --data train.npz --report publictest.npz --epochs 80 --ema --mixup 0.2
  edgefer train --arch edgenet --data train.npz --aug real --loss focal --class-weights effective --swa-start 50
  edgefer train report runs/edgenet/best.pth --data publictest.npz --data posed6.npz --json report.json
  edgefer train views --data train.npz --arch edgenet -o views.npz          # faces cropped as `run` crops them
  edgefer train --arch edgenet --data train.npz --views views.npz --soft-labels ferplus --soft-classes fer2013 --soft-mix 0.3
  edgefer train adjust runs/edgenet/best.pth -o runs/edgenet/adjusted.pth   # rare-class logit adjustment, on the carve
  edgefer train --arch edgenet --data fer2013.csv --soft-labels ferplus      # FERPlus votes, 8 classes
  edgefer train --arch resnet18 --data RAF-DB/basic --balanced
  edgefer train --resume runs/edgenet/last.pt                                # continue a stopped run
  edgefer export runs/edgenet/best.pth --target onnx                         # arch, classes from the sidecar

\b
Data: fer2013.csv (Training rows), a folder of class folders (or a Kaggle root with train/ and
test/), an .npz (images, labels[, classes]), or RAF-DB's basic layout
(EmoLabel/list_patition_label.txt + Image/aligned/). The model is selected (best epoch) on a
class-stratified carve of the training data (--val-split, --split-seed); test sets go to --report.
Writes to -o DIR: best.pth (plain state dict) + best.pth.json (sidecar: arch, classes, input,
metrics, data provenance, command), last.pt (resume), metrics.json, log.txt, command.txt,
curves.png, confusion.png.
"""


def _arch_names() -> list[str]:
    from .zoo import names

    return names()


def _apply_preset(ctx: click.Context, values: dict) -> dict:
    """``--aug PRESET`` sets its values unless the same flag was given explicitly."""
    from .engine import AUG_PRESETS

    name = values.get("aug")
    if not name:
        return {}
    out = {}
    for key, v in AUG_PRESETS[name].items():
        src = ctx.get_parameter_source(key) if key in ctx.params else None
        if src in (None, click.core.ParameterSource.DEFAULT):
            out[key] = v
    return out


@click.group(name="train", epilog=EPILOG, context_settings={"max_content_width": 100}, invoke_without_command=True,
             subcommand_metavar="[report CKPT --data X ...]")
@click.option("--arch", help="Zoo architecture (edgenet, mini-xception, resnet18, deep-emotion, emotorch-...).")
@click.option("--data", type=click.Path(), help="Training data: fer2013.csv, class folders, .npz or RAF-DB basic.")
@click.option("--val", type=click.Path(),
              help="Select on this set instead of the carved split (recorded; a test set draws a warning).")
@click.option("--val-split", type=float, default=0.1, show_default=True,
              help="Share of each class carved from the training data to select on (best epoch).")
@click.option("--split-seed", type=int, default=15, show_default=True,
              help="Seed of the carve (independent of --seed: runs hold out the same faces).")
@click.option("--report", "report", type=click.Path(), multiple=True,
              help="After training, score the best weights once on this labelled set (repeatable; never selects).")
@click.option("--epochs", type=int, default=None, help="Epochs (default 60).")
@click.option("--batch", type=int, default=128, show_default=True, help="Batch size.")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default 2e-3 AdamW / 0.1 SGD at batch 128).")
@click.option("--opt", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--weight-decay", type=float, default=None, help="Default 0.05 (AdamW) / 5e-4 (SGD).")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--mixup", type=float, default=0.0, show_default=True, help="Mixup Beta alpha (0 = off).")
@click.option("--cutmix", type=float, default=0.0, show_default=True, help="CutMix Beta alpha (0 = off).")
@click.option("--mix-prob", type=float, default=0.5, show_default=True, help="Share of batches mixed.")
@click.option("--ema/--no-ema", default=False, show_default=True, help="Keep an EMA of the weights; evaluate and save it.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option("--warmup", type=float, default=3.0, show_default=True, help="Linear warm-up epochs before the cosine decay.")
@click.option("--balanced", is_flag=True, help="Class-balanced sampling (each class drawn equally often).")
@click.option("--soft-labels", "soft_labels", default=None, metavar="ferplus|PATH",
              help="FERPlus vote distributions as targets (KL loss): 'ferplus' or the path of fer2013new.csv.")
@click.option("--soft-classes", type=click.Choice(["ferplus", "fer2013"]), default="ferplus", show_default=True,
              help="Soft labels over FERPlus's 8 emotions, or FER2013's 7 (contempt dropped, renormalised).")
@click.option("--soft-mix", type=float, default=1.0, show_default=True,
              help="With --soft-classes fer2013: targets (1-MIX) x the data's own label + MIX x the votes (1 = votes only).")
@click.option("--loss", type=click.Choice(["ce", "focal"]), default="ce", show_default=True,
              help="Label loss: cross-entropy or focal (Lin et al. 2017).")
@click.option("--focal-gamma", type=float, default=2.0, show_default=True)
@click.option("--class-weights", type=click.Choice(["balanced", "effective"]), default=None,
              help="Weigh rare classes: 1/n, or the effective number (Cui et al. 2019, --cb-beta).")
@click.option("--cb-beta", type=float, default=0.999, show_default=True)
@click.option("--aug", type=click.Choice(["real"]), default=None,
              help="Preset of camera augmentation (wider crop jitter, resolution loss, blur, gamma, noise, JPEG); "
                   "flags given explicitly win.")
@click.option("--erase", type=float, default=0.25, show_default=True, help="Random-erasing (occlusion) probability.")
@click.option("--rotate", type=float, default=10.0, show_default=True, help="Max rotation (degrees).")
@click.option("--scale", type=float, default=0.1, show_default=True, help="Max crop scale jitter (fraction).")
@click.option("--translate", type=float, default=0.1, show_default=True, help="Max crop shift (fraction of the side).")
@click.option("--jitter", type=float, default=0.2, show_default=True, help="Brightness/contrast jitter.")
@click.option("--downscale", type=float, default=0.0, show_default=True, help="Probability of resolution loss.")
@click.option("--blur", type=float, default=0.0, show_default=True, help="Probability of Gaussian blur.")
@click.option("--gamma", type=float, default=0.0, show_default=True, help="Probability of a gamma curve.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Probability of Gaussian noise.")
@click.option("--jpeg", type=float, default=0.0, show_default=True, help="Probability of JPEG re-encoding.")
@click.option("--swa-start", type=int, default=None,
              help="Stochastic weight averaging from this epoch on (BN recomputed; saved when better on the carve).")
@click.option("--swa-lr", type=float, default=None, help="Constant learning rate during SWA (default: keep the schedule).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="Torch CPU threads (default min(4, cores)).")
@click.option("--device", default="auto", show_default=True,
              help="Where the network trains: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or "
                   "cuda:N. Augmentation stays on the CPU threads.")
@click.option("--limit", type=int, default=None, help="Use only the first N training images (smoke runs).")
@click.option("--resume", "resume", type=click.Path(), default=None, help="Continue from DIR/last.pt (or DIR).")
@click.option("--init", "init", type=click.Path(), default=None,
              help="Start from these weights (e.g. an earlier run's best.pth) with a fresh schedule.")
@click.option("--tta", type=click.Choice(["flip"]), default=None,
              help="Score validation with the mean of each face and its mirror image; the checkpoint's sidecar "
                   "records it and `edgefer export` puts the flip in the graph.")
@click.option("--teacher", type=click.Path(), multiple=True,
              help="Distil from this checkpoint (a best.pth with its sidecar; its --tta flip included): the loss "
                   "mixes the labels with the teacher's probabilities on the same augmented batch. Repeat for an "
                   "ensemble teacher (probabilities averaged).")
@click.option("--teacher-input", type=click.Choice(["same", "clean"]), default="same", show_default=True,
              help="What the teachers see: the student's augmented batch, or the same faces before the camera "
                   "degradations and erasing (the student learns the clean face's answer for the degraded one).")
@click.option("--distill", type=float, default=0.5, show_default=True, help="Weight of the teacher term (0-1).")
@click.option("--distill-temp", type=float, default=2.0, show_default=True, help="Softmax temperature of the teacher term.")
@click.option("--views", type=click.Path(), default=None,
              help="Runtime views of the training faces (`edgefer train views`): train on the crops the runtime makes.")
@click.option("--view-prob", type=float, default=0.5, show_default=True,
              help="Share of training samples drawn from their runtime views.")
@click.option("-o", "--out", type=click.Path(), default=None, help="Output folder (default runs/<arch>).")
@click.pass_context
def train(ctx, arch, data, val, val_split, split_seed, report, epochs, batch, lr, opt, weight_decay, label_smoothing,
          mixup, cutmix, mix_prob, ema, ema_decay, warmup, balanced, soft_labels, soft_classes, soft_mix, loss, focal_gamma,
          class_weights, cb_beta, aug, erase, rotate, scale, translate, jitter, downscale, blur, gamma, noise, jpeg,
          swa_start, swa_lr, seed, threads, device, limit, resume, init, tta, teacher, teacher_input, distill, distill_temp, views, view_prob, out):
    """Train a zoo architecture; checkpoints export with `edgefer export` and no --arch.

    `edgefer train report CKPT --data X` scores a checkpoint on labelled sets."""
    if ctx.invoked_subcommand is not None:
        return
    from .engine import TrainConfig
    from .engine import train as run

    quiet = bool((ctx.obj or {}).get("quiet"))
    command = "edgefer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    if resume:
        cfg = TrainConfig(arch=arch or "", data=data or "", epochs=epochs or 0, threads=threads, device=device, quiet=quiet)
        run(cfg, resume=resume)
        return
    if not arch or not data:
        raise EdgeferError("edgefer train needs --arch and --data (or --resume DIR)")
    if arch not in _arch_names():
        raise EdgeferError(f"unknown architecture {arch!r}; known: {', '.join(_arch_names())}")
    from .engine import resolve_device

    resolve_device(device)  # a GPU this machine lacks is refused before the run folder exists
    for name, v in (("--batch", batch), ("--epochs", epochs if epochs is not None else 1)):
        if v < 1:
            raise EdgeferError(f"{name} must be >= 1")
    if not 0 <= label_smoothing < 1:
        raise EdgeferError("--label-smoothing must be in [0, 1)")
    if not 0 <= distill <= 1 or distill_temp <= 0:
        raise EdgeferError("--distill must be in [0, 1] and --distill-temp > 0")
    if teacher_input == "clean" and not teacher:
        raise EdgeferError("--teacher-input clean needs --teacher")
    if not 0 < val_split < 1:
        raise EdgeferError("--val-split must be in (0, 1)")
    if loss == "focal" and focal_gamma < 0:
        raise EdgeferError("--focal-gamma must be >= 0")
    for name, v in (("--downscale", downscale), ("--blur", blur), ("--gamma", gamma), ("--noise", noise),
                    ("--jpeg", jpeg), ("--erase", erase)):
        if not 0 <= v <= 1:
            raise EdgeferError(f"{name} is a probability: 0..1, not {v}")
    if not 0 <= soft_mix <= 1:
        raise EdgeferError(f"--soft-mix must be in 0..1, not {soft_mix}")
    if soft_mix < 1 and (not soft_labels or soft_classes != "fer2013"):
        raise EdgeferError("--soft-mix below 1 needs --soft-labels and --soft-classes fer2013")
    if not 0 <= view_prob <= 1:
        raise EdgeferError(f"--view-prob is a probability: 0..1, not {view_prob}")
    if swa_start is not None and swa_start < 1:
        raise EdgeferError("--swa-start must be an epoch >= 1")
    _check_paths(data=data, val=val, views=views)  # --init / --teacher: the engine says "no such checkpoint"
    for r in report:
        _check_paths(report=r)
    n_epochs = epochs or TrainConfig.epochs
    warmup = _warmup(warmup, n_epochs, ctx.get_parameter_source("warmup") == click.core.ParameterSource.DEFAULT,
                     quiet)
    cfg = TrainConfig(
        arch=arch, data=data, val=val, out=out, epochs=epochs or TrainConfig.epochs, batch=batch, lr=lr, opt=opt,
        weight_decay=weight_decay, warmup=warmup, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix,
        mix_prob=mix_prob, ema=ema, ema_decay=ema_decay, balanced=balanced, soft_labels=soft_labels, seed=seed,
        erase=erase, rotate=rotate, threads=threads, device=device, limit=limit, quiet=quiet, command=command, init=init, tta=tta,
        teacher=(teacher[0] if len(teacher) == 1 else list(teacher)) if teacher else None, distill=distill,
        teacher_input=teacher_input, distill_temp=distill_temp, val_split=val_split, split_seed=split_seed, report=list(report),
        soft_classes=soft_classes, soft_mix=soft_mix, loss=loss, focal_gamma=focal_gamma, class_weights=class_weights, cb_beta=cb_beta,
        aug=aug, scale=scale, translate=translate, jitter=jitter, downscale=downscale, blur=blur, gamma=gamma,
        noise=noise, jpeg=jpeg, swa_start=swa_start, swa_lr=swa_lr, views=views, view_prob=view_prob,
    )
    for key, v in _apply_preset(ctx, {"aug": aug}).items():
        setattr(cfg, key, v)
    with _no_leftovers(Path(out or f"runs/{arch}")):
        run(cfg)


@train.command(name="report", context_settings={"max_content_width": 100})
@click.argument("ckpt", type=click.Path())
@click.option("--data", "data", type=click.Path(), multiple=True, required=True,
              help="Labelled set (fer2013.csv PublicTest rows, .npz, class folders, RAF-DB); repeatable.")
@click.option("--usage", type=click.Choice(["PublicTest", "PrivateTest", "Training"]), default="PublicTest",
              show_default=True, help="Rows of a fer2013.csv / split of a folder root to read.")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Write the results as JSON here.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
def report_cmd(ckpt, data, usage, json_out, threads):
    """Final numbers of a checkpoint on labelled sets: top-1, macro-F1, per-class recall, confusion
    (one pass, and with the mirror image when its sidecar says tta flip). Classes are matched by
    name; a set with only some of the model's classes is scored on the shared ones (argmax over
    those)."""
    from .report import format_report, report_checkpoint, write_report

    for what, value in [("checkpoint", ckpt)] + [("--data", d) for d in data]:
        if not Path(value).exists():
            raise EdgeferError(f"{what} {value}: not found (no such file or folder)")
    results = report_checkpoint(ckpt, list(data), threads=threads, usage=usage)
    click.echo(format_report(ckpt, results))
    if json_out:
        write_report(json_out, ckpt, results)


@train.command(name="adjust", context_settings={"max_content_width": 100})
@click.argument("ckpt", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="The adjusted checkpoint (.pth, with its sidecar).")
@click.option("--tau", type=float, default=None, help="Use this tau instead of the best macro-F1 on the carve.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
def adjust_cmd(ckpt, out, tau, threads):
    """Logit adjustment for the rare classes, chosen on the run's own carve and folded into the
    output layer (train/adjust.py). Never reads a test split: score the result with `train report`."""
    from .adjust import adjust

    if tau is not None and not 0 <= tau <= 5:
        raise EdgeferError(f"--tau must be in 0..5, not {tau}")
    r = adjust(ckpt, out, tau=tau, threads=threads)
    b, a = r["carve_before"], r["carve_after"]

    def line(m):
        rare = ", ".join(f"{c} {100 * m['recall'][c]:.1f}%" for c in ("disgust", "fear") if c in m["recall"])
        return f"top-1 {100 * m['top1']:.2f}% macro-F1 {100 * m['macro_f1']:.2f}% ({rare})"

    click.echo(f"carve, tau 0: {line(b)}")
    click.echo(f"carve, tau {r['tau']:g} ({r['chosen_by']}): {line(a)}")
    click.echo(f"-> {out}")


@train.command(name="views", context_settings={"max_content_width": 100})
@click.option("--data", required=True, type=click.Path(), help="Training data (the same file --data trains on).")
@click.option("--arch", required=True, help="Architecture whose input size and colour the crops take.")
@click.option("--per-face", type=int, default=2, show_default=True, help="Views per face.")
@click.option("--sides", default="48-144", show_default=True, help="Pasted face side range in pixels (MIN-MAX).")
@click.option("--sensor-noise", type=float, default=0.0, show_default=True,
              help="Camera noise over each whole frame before the crop: per view, a Gaussian std drawn "
                   "uniformly from 0 to this (gray levels).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N faces (smoke runs).")
@click.option("-o", "--out", required=True, type=click.Path(), help="Output .npz.")
def views_cmd(data, arch, per_face, sides, sensor_noise, seed, limit, out):
    """Crop every training face the way the runtime would: pasted into a frame, found by the bundled
    detector, cut by the default crop rule (train/views.py). Train on them with --views."""
    from .engine import arch_spec
    from .views import make_views, save_views

    _check_paths(data=data)
    try:
        lo, hi = (int(v) for v in sides.split("-"))
    except ValueError:
        raise EdgeferError(f"--sides {sides!r}: expected MIN-MAX in pixels, e.g. 48-144") from None
    if Path(out).resolve() == Path(data).resolve():
        raise EdgeferError("--out must not overwrite --data")
    spec = arch_spec(arch)
    made = make_views(data, tuple(spec["size"]), spec["color"], per_face=per_face, sides=(lo, hi), seed=seed,
                      limit=limit, sensor_noise=sensor_noise)
    save_views(out, made)
    m = made["meta"]
    click.echo(f"{out}: {m['count']} faces x {m['per_face']} views, detector found {m['found_pct']}% "
               f"({m['seconds']:.0f} s)")


def _check_paths(**paths: str | None) -> None:
    """A missing input is one line before anything is written (the run folder and its log.txt
    used to be created first, then the data found missing)."""
    for flag, value in paths.items():
        if value and not Path(value).exists():
            raise EdgeferError(f"--{flag} {value}: not found (no such file or folder)")


def _warmup(warmup: float, epochs: int, is_default: bool, quiet: bool) -> float:
    """The warm-up to use, said out loud when it is not what the user might expect.

    The learning rate climbs linearly for ``warmup`` epochs, then decays. With the default of 3
    epochs a 1-2 epoch run (a smoke test, a fine-tune) never reached its peak rate, silently. The
    default is therefore capped at a third of the run, with a note; an explicit ``--warmup`` as
    long as the run is kept, with a warning.
    """
    if warmup < 0:
        raise EdgeferError("--warmup must be >= 0 epochs")
    if is_default and warmup > epochs / 3:
        short = round(epochs / 3, 3)
        if not quiet:  # with the run's other progress lines on stdout; stderr stays for errors
            click.echo(f"note: the default --warmup of {warmup:g} epochs is more than a third of this "
                       f"{epochs}-epoch run; warming up for {short:g} epochs so the learning rate reaches its peak "
                       "(pass --warmup to choose)")
        return short
    if warmup >= epochs:
        click.echo(f"edgefer train: warning: --warmup {warmup:g} epochs is not shorter than --epochs {epochs}: the "
                   "learning rate never reaches its peak (--lr) in this run", err=True)
    return warmup


@contextmanager
def _no_leftovers(out: Path):
    """Remove what a run that failed before its first checkpoint left in a folder it created
    (log.txt, command.txt): a typo in --data must not leave runs/ARCH behind."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any((out / f).exists() for f in ("best.pth", "last.pt")):
            for f in out.iterdir():
                if f.is_file() and f.name in ("log.txt", "command.txt"):
                    f.unlink()
            try:
                out.rmdir()  # only if nothing else is there
            except OSError:
                pass
        raise
