"""Episode storage shared by every stage: simulated rollouts, plain videos and recorded bags."""
from .episodes import (DatasetInfo, Episode, EpisodeDataset, EpisodeWriter, VideoFolder, open_episodes,
                       summarize)
from .errors import EpisodeFormatError

__all__ = ["DatasetInfo", "Episode", "EpisodeDataset", "EpisodeWriter", "EpisodeFormatError", "VideoFolder",
           "open_episodes", "summarize"]
