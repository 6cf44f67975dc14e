"""Readers for labeled face datasets, re-exported from :mod:`edgefer.datasets`.

The readers (and their validation of untrusted CSV, ``.npz`` and class-folder data) live in the
runtime package, because ``edgefer bench --data`` reads labeled data too and the runtime never
imports a build-side stage. Build-side code may keep importing them from here.
"""

from __future__ import annotations

from edgefer.datasets import (  # noqa: F401  (re-exported)
    CSV_FIELD_LIMIT,
    IMAGE_SUFFIXES,
    MIN_SIDE,
    USAGES,
    VIDEO_SUFFIXES,
    LabeledTable,
    check_classes,
    check_images,
    check_integers,
    check_labels,
    class_folder_root,
    iter_csv,
    load_labeled,
    max_array_bytes,
    media_files,
    npz_keys,
    open_labeled,
    ordered_classes,
    parse_pixels,
    read_image,
    read_npz,
    stack_images,
)
