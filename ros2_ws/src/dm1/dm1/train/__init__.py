"""Training: ``Trainer`` (``dm1 train``), LR schedule, metric plots, training benchmark."""
