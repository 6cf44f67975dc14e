"""The package version, in a module of its own: modules inside edgefer read it from here, so none
of them imports the package ``__init__`` (whose lazy names reach the whole runtime)."""

__version__ = "0.1.0"
