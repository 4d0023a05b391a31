"""Evaluation: classification metrics, confusion matrices and the TF-IDF baseline."""
