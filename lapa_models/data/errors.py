"""Errors raised when reading data from disk: each names the file at fault."""


class EpisodeFormatError(ValueError):
    """A dataset, episode or video file that is missing, corrupt, truncated or inconsistent."""


class FrameSizeError(ValueError):
    """Data whose frames cannot be brought to a model's input size without distorting them."""
