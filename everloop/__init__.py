"""everloop: learn a visual process from video and play it forever."""

__version__ = "0.1.0"
