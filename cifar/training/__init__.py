"""Training a family's model: the fit, its callbacks, train(config) -> a published run folder."""
