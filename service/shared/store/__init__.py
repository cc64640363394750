"""SQLAlchemy 2 models and session handling; the API and the worker both use it."""
