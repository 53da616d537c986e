"""The job service's worker: the Celery app and its task, the job runner (one child process per
job), the worker-side database writes, the janitor, and the ``serve`` / ``worker`` / ``demo``
commands."""
