"""A run's model on any image: predictions, ensembles, exports, Grad-CAM."""
