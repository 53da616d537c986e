"""The ``livt`` command and the Python client of the LiVT job service."""
