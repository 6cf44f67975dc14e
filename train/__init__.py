"""edgefer.train: the torch model zoo and training. Build-side only; imports torch."""
