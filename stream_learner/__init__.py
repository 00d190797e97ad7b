"""stream-learner: an online continual-learning daemon for Kafka streams."""

__version__ = "0.1.0"
