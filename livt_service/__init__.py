"""The service core shared by the API (``api``) and the worker (``worker``).

It holds what both halves need, each written once: the settings object (``settings``), the
database models and sessions (``models``, ``db``), the queue (``queue``: the Celery app and
``enqueue``) and every change of a job's state (``state``). ``api`` and ``worker`` import this
package and never each other; this package imports neither of them.
"""
