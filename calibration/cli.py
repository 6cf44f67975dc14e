"""`edgefer calibrate`: collect calibration face crops into an .npz that `--calib` reads back."""

from __future__ import annotations

from pathlib import Path

import click

from edgefer.artifact import DEFAULT_CLASSIFIER
from edgefer.errors import EdgeferError

from .samples import DEFAULT_COUNT, collect, save_npz


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npz (images, labels, classes, provenance).")
@click.option("--model", default=DEFAULT_CLASSIFIER, show_default=True,
              help="Classifier whose manifest sets the crop size, colour and alignment.")
@click.option("-n", "--size", "count", type=click.IntRange(min=1), default=DEFAULT_COUNT, show_default=True, help="Number of crops.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--usage", type=click.Choice(["Training", "PublicTest", "PrivateTest"]), default="Training", show_default=True,
              help="FER2013 CSV rows (or Kaggle train/test folders) to draw from.")
@click.option("--detect", is_flag=True, default=None, help="Run the face detector on class-folder images too (full photos).")
@click.option("--det-size", type=click.IntRange(min=0), default=640, show_default=True, help="Detector input long side (videos/photos).")
@click.pass_context
def calibrate(ctx, source, output, model, count, seed, usage, detect, det_size):
    """Collect face crops from SOURCE for INT8 calibration and write them to an .npz.

    \b
    SOURCE: fer2013.csv, a .npz of faces, a folder of class folders (<root>/<class>/*.jpg),
    a video, a photo, or a folder of videos/photos. Labeled data is sampled class-balanced;
    videos and photos go through edgefer's face detector and aligner with the model's crop.
    Examples:
      edgefer calibrate fer2013.csv -o calib.npz
      edgefer calibrate clips/ -o calib.npz -n 500
      edgefer export mini-xception --target openvino --int8 --calib calib.npz
    """
    from edgefer.artifact import load

    quiet = (ctx.obj or {}).get("quiet", False)
    src, out = Path(source).expanduser(), Path(output).expanduser()
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise EdgeferError(f"output {output} is the calibration source {source}: write the samples elsewhere")
    art = load(model, kind="classifier")
    m = art.manifest
    if m.kind != "classifier":
        raise EdgeferError(f"{model} is a {m.kind}; calibration crops are for classifiers")
    detector = None
    from .samples import describe_source

    if describe_source(Path(source)) in ("video", "image", "media-folder") or detect:
        from .samples import default_detector

        try:
            from edgefer.detect import FaceDetector

            detector = FaceDetector(det_size=det_size)
        except ImportError:
            detector = default_detector()
    cs = collect(source, m.input, m.crop, count=count, seed=seed, usage=usage, detect=detect, detector=detector,
                 progress=not quiet, model_classes=m.classes)
    cs.provenance["model"] = m.name
    cs.provenance["input"] = {"size": m.input.size, "color": m.input.color, "crop": m.crop}
    path = save_npz(cs, output)
    per = cs.provenance.get("per_class")
    click.echo(f"wrote {path}: {len(cs)} crops {m.input.size[0]}x{m.input.size[1]} {m.input.color} from "
               f"{cs.provenance['kind']} {cs.provenance['source_name']}" + (f" ({', '.join(f'{k} {v}' for k, v in per.items())})" if per else ""))
