"""Training: settings, the training loop, and the tasks built on it."""
