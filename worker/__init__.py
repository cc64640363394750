"""Celery glue between the store and the engine. torch is imported only inside task processes."""
