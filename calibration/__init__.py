"""edgefer.calibration: samples for INT8 calibration and accuracy checks, from real face data."""
