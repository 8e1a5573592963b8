"""mineralseg: mineral maps from greyscale SEM images of rock."""

__version__ = "0.1.0"
