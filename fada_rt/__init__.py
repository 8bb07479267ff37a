"""fada-rt: real-time audio-driven talking avatars after FADA."""

__version__ = "0.1.0"
