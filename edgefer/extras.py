"""Which pip extra installs an optional package, and the one-line hint that says so.

The runtime installs with numpy, OpenCV, ONNX Runtime and click only; export, training,
OpenVINO, TensorRT, Core ML and the demo need extras. Commands import those packages lazily,
deep inside what they do, so a missing one used to surface as a ``ModuleNotFoundError``
traceback minutes into an export. One table here maps each optional top-level module to the
extras that install it (kept in step with ``[project.optional-dependencies]`` in
pyproject.toml), so every command can name the extra in one line, in the form that works both
for an installed package and from a clone of the repository.

Never imports an optional package itself except in :func:`require`, which is asked to.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from .errors import EdgeferError

#: extra -> top-level modules it installs (import names, not distribution names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino",),
    "coreml": ("coremltools",),
    "trt": ("tensorrt", "cuda", "pycuda"),
    "demo": ("skimage",),
    "export": ("torch", "onnx", "onnxscript", "onnxconverter_common", "h5py", "nncf", "openvino", "coremltools"),
    "train": ("torch", "onnx", "onnxscript", "matplotlib"),
    "analyze": ("pyarrow",),
    "ray": ("ray", "pyarrow"),
    "mqtt": ("paho",),
}
#: per command, the extras to name first: the one that covers the whole command where there is one
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("export", "trt"),
    "calibrate": ("export",),
    "train": ("train",),
    "explain": ("train", "openvino", "coreml", "trt"),
    "analyze": ("analyze", "ray"),
    "run": ("openvino", "coreml", "trt", "mqtt"),
}
#: otherwise the narrowest extra wins (run / bench / info with an OpenVINO artifact: [openvino])
DEFAULT_ORDER: tuple[str, ...] = ("openvino", "coreml", "trt", "demo", "mqtt", "analyze", "ray", "export", "train")


def top_module(name: str | None) -> str:
    return (name or "").split(".")[0]


def extra_for(module: str | None, command: str | None = None) -> str | None:
    """The extra that installs ``module`` (an import name, dotted or not), preferring the one
    that covers ``command``; None when the module is not an optional dependency of edgefer."""
    top = top_module(module)
    for extra in COMMAND_EXTRAS.get(command or "", ()) + DEFAULT_ORDER:
        if top in EXTRAS.get(extra, ()):
            return extra
    return None


def install_hint(extra: str) -> str:
    """``pip install`` of ``extra`` for a released package and for a clone (where the package
    name means nothing to pip and the extra hangs on the project folder)."""
    return f"pip install 'edgefer[{extra}]' (from a clone of the repository: pip install '.[{extra}]')"


def missing_message(modules: Iterable[str], command: str | None = None, what: str | None = None) -> str:
    """One line: what needs which missing modules, and the extra(s) that install them."""
    mods = list(dict.fromkeys(top_module(m) for m in modules if m))
    extras = list(dict.fromkeys(e for e in (extra_for(m, command) for m in mods) if e))
    who = what or (f"`edgefer {command}`" if command else "this")
    hint = "; ".join(install_hint(e) for e in extras) if extras else f"pip install {' '.join(mods)}"
    return f"{who} needs {', '.join(mods)}, not installed here: {hint}"


def is_optional(module: str | None) -> bool:
    top = top_module(module)
    return any(top in mods for mods in EXTRAS.values())


def require(modules: Iterable[str], command: str | None = None, what: str | None = None) -> None:
    """Import ``modules`` now and raise one :class:`EdgeferError` naming every missing one and its
    extra, so a command stops before its work rather than deep inside it (an export would
    otherwise calibrate for minutes, then fail on ``import openvino``)."""
    missing: list[str] = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            # the package itself is absent (not one of its own dependencies: that is a broken install)
            if top_module(e.name) == top_module(m) or e.name is None:
                missing.append(m)
            else:
                raise
    if missing:
        raise EdgeferError(missing_message(missing, command, what))


def as_edgefer_error(e: ModuleNotFoundError, command: str | None = None) -> EdgeferError | None:
    """The one-line error for ``e`` when it is an optional dependency missing, else None."""
    if not is_optional(e.name):
        return None
    return EdgeferError(missing_message([e.name or ""], command))
