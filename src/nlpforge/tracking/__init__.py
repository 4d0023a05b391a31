"""Experiments: MLflow runs for every training job and tuning trial (see tracking/runs.py)."""
