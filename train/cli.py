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
  edgefer train --arch edgenet --data fer2013.csv -o runs/edgenet
  edgefer train --arch edgenet --data train.npz --val publictest.npz --epochs 80 --ema --mixup 0.2
  edgefer train --arch edgenet --data fer2013.csv --soft-labels ferplus      # FERPlus votes, 8 classes
  edgefer train --arch resnet18 --data RAF-DB/basic --balanced
  edgefer train --resume runs/edgenet/last.pt                                # continue a stopped run
  edgefer export runs/edgenet/best.pth --target onnx                         # arch, classes from the sidecar

\b
Data: fer2013.csv (Training rows; PublicTest rows validate unless --val), a folder of class
folders (or a Kaggle root with train/ and test/), an .npz (images, labels[, classes]), or
RAF-DB's basic layout (EmoLabel/list_patition_label.txt + Image/aligned/).
Writes to -o DIR: best.pth (plain state dict) + best.pth.json (sidecar: arch, classes, input,
metrics, data provenance, command), last.pt (resume), metrics.json, log.txt, command.txt,
curves.png, confusion.png.
"""


def _arch_names() -> list[str]:
    from .zoo import names

    return names()


@click.command(name="train", epilog=EPILOG, context_settings={"max_content_width": 100})
@click.option("--arch", help="Zoo architecture (edgenet, mini-xception, resnet18, deep-emotion, emotorch-...).")
@click.option("--data", type=click.Path(), help="Training data: fer2013.csv, class folders, .npz or RAF-DB basic.")
@click.option("--val", type=click.Path(), help="Validation data (default: the data's test split, else a 10% holdout).")
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
@click.option("--erase", type=float, default=0.25, show_default=True, help="Random-erasing probability.")
@click.option("--rotate", type=float, default=10.0, show_default=True, help="Max rotation (degrees).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="Torch CPU threads (default min(4, cores)).")
@click.option("--limit", type=int, default=None, help="Use only the first N training images (smoke runs).")
@click.option("--resume", "resume", type=click.Path(), default=None, help="Continue from DIR/last.pt (or DIR).")
@click.option("--init", "init", type=click.Path(), default=None,
              help="Start from these weights (e.g. an earlier run's best.pth) with a fresh schedule.")
@click.option("--tta", type=click.Choice(["flip"]), default=None,
              help="Score validation with the mean of each face and its mirror image; the checkpoint's sidecar "
                   "records it and `edgefer export` puts the flip in the graph.")
@click.option("--teacher", type=click.Path(), default=None,
              help="Distil from this checkpoint (a best.pth with its sidecar; its --tta flip included): the loss "
                   "mixes the labels with the teacher's probabilities on the same augmented batch.")
@click.option("--distill", type=float, default=0.5, show_default=True, help="Weight of the teacher term (0-1).")
@click.option("--distill-temp", type=float, default=2.0, show_default=True, help="Softmax temperature of the teacher term.")
@click.option("-o", "--out", type=click.Path(), default=None, help="Output folder (default runs/<arch>).")
@click.pass_context
def train(ctx, arch, data, val, epochs, batch, lr, opt, weight_decay, label_smoothing, mixup, cutmix, mix_prob,
          ema, ema_decay, warmup, balanced, soft_labels, erase, rotate, seed, threads, limit, resume, init, tta,
          teacher, distill, distill_temp, out):
    """Train a zoo architecture; checkpoints export with `edgefer export` and no --arch."""
    from .engine import TrainConfig
    from .engine import train as run

    quiet = bool((ctx.obj or {}).get("quiet"))
    command = "edgefer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    if resume:
        cfg = TrainConfig(arch=arch or "", data=data or "", epochs=epochs or 0, threads=threads, quiet=quiet)
        run(cfg, resume=resume)
        return
    if not arch or not data:
        raise EdgeferError("edgefer train needs --arch and --data (or --resume DIR)")
    if arch not in _arch_names():
        raise EdgeferError(f"unknown architecture {arch!r}; known: {', '.join(_arch_names())}")
    for name, v in (("--batch", batch), ("--epochs", epochs if epochs is not None else 1)):
        if v < 1:
            raise EdgeferError(f"{name} must be >= 1")
    if not 0 <= label_smoothing < 1:
        raise EdgeferError("--label-smoothing must be in [0, 1)")
    if not 0 <= distill <= 1 or distill_temp <= 0:
        raise EdgeferError("--distill must be in [0, 1] and --distill-temp > 0")
    _check_paths(data=data, val=val)  # --init / --teacher: the engine says "no such checkpoint"
    n_epochs = epochs or TrainConfig.epochs
    warmup = _warmup(warmup, n_epochs, ctx.get_parameter_source("warmup") == click.core.ParameterSource.DEFAULT,
                     quiet)
    cfg = TrainConfig(
        arch=arch, data=data, val=val, out=out, epochs=epochs or TrainConfig.epochs, batch=batch, lr=lr, opt=opt,
        weight_decay=weight_decay, warmup=warmup, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix,
        mix_prob=mix_prob, ema=ema, ema_decay=ema_decay, balanced=balanced, soft_labels=soft_labels, seed=seed,
        erase=erase, rotate=rotate, threads=threads, limit=limit, quiet=quiet, command=command, init=init, tta=tta,
        teacher=teacher, distill=distill, distill_temp=distill_temp,
    )
    with _no_leftovers(Path(out or f"runs/{arch}")):
        run(cfg)


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
