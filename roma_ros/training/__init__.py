"""ROMA-tiny: the synthetic-domain data generator, training, evaluation and sample bag of the
embedded demonstration model (roma_ros/models/roma_tiny)."""
