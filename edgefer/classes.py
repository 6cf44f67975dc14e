"""Class lists: the one place that defines emotion label sets and their aliases.

Labels of different datasets name the same emotion differently (FER2013 "angry", FERPlus
"anger", EmoTorch "anger"; "happy" vs "happiness"). Models keep their own names in their
manifest; :func:`canonical` maps a name to one spelling so that labels of a dataset can be
matched to a model's outputs by name.
"""

from __future__ import annotations

FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
EMOTORCH4 = ("anger", "fear", "calm", "surprise")

_ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "contempt": "contempt",
    # EmoTorch's "calm" is its name for FER2013's neutral (its 4-class set maps FER2013 neutral to calm)
    "calm": "neutral",
}


def canonical(name: str) -> str:
    """The canonical spelling of an emotion name (unknown names are returned lower-cased)."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)
