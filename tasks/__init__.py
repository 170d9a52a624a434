"""The worker's task table (`tasks.table`) and the named handler of every task.

Nothing here imports Celery or the worker: the command line and the unit tests read
the table without getting a Celery app.
"""
