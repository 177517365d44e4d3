"""Models: builders, the frozen base's features and their cache, a finished run's model restored,
its validation predictions."""
