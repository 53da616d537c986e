"""LiVT (Xu et al., CVPR 2023) as a library: models, losses, data, engines and metrics.

This package imports nothing from the service layers (``api``, ``worker``, ``livt``).
"""

__version__ = "0.1.0"
