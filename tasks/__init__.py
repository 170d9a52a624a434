"""Thin Celery task entry points; the names are the public contract."""
