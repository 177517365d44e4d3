"""Questions about finished runs: per-class metrics, robustness, the feature space, cost, trust,
figures, TensorBoard."""
