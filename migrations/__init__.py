"""Alembic migrations of the job service database (``livt db upgrade`` runs them)."""
