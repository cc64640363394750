"""Metrics beside the Reporter: TensorBoard event files (event_file.py), W&B and MLflow
(trackers.py), and the Reporter wrapper that feeds both (reporter.py), wired in worker/tasks.py."""
