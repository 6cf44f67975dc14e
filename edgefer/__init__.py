"""edgefer: fused face detection + emotion classification for edge devices.

The runtime never imports torch. Python API mirrors the CLI::

    import edgefer
    pipe = edgefer.Pipeline()                 # bundled detector + classifier
    for result in pipe.run("video.mp4"):
        for face in result.faces:
            print(result.frame, face.emotion, face.confidence)
"""

from ._version import __version__  # noqa: E402
from .artifact import load as load_artifact  # noqa: E402
from .errors import EdgeferError  # noqa: E402


#: the public names, the lazy ones included: ``dir(edgefer)`` and tab completion list them
#: although they are only imported on first use (``edgefer.Pipeline`` pulls in OpenCV and the
#: runtimes, which ``import edgefer`` alone should not)
_LAZY = ("Pipeline", "FrameResult", "Face", "load")
__all__ = ["EdgeferError", "load_artifact", "__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name):  # lazy: keep `import edgefer` light
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name in ("FrameResult", "Face"):
        from . import results

        return getattr(results, name)
    if name == "load":  # an artifact on a backend, or an ensemble manifest (edgefer.classify.open_model)
        from .classify import open_model

        return open_model
    raise AttributeError(name)
