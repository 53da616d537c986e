"""Vision Transformer classifiers, MAE pretraining models and the MGP → BFT weight transfer.

``create_model(name, **overrides)`` builds any registered variant; ``list_models()`` names them.
Classifiers: ``vit_{tiny,small,base,large}_patch16``, ``vit_huge_patch14`` and the CPU-sized
``vit_{nano,micro}_patch4``; MAE models: the same names with a ``mae_`` prefix.
"""

from livt_core.models import mae, vit
from livt_core.models.factory import create_model, is_mae_model, list_models, register_model
from livt_core.models.mae import MaskedAutoencoderViT
from livt_core.models.pos_embed import get_2d_sincos_pos_embed, interpolate_pos_embed
from livt_core.models.transfer import load_encoder_into_classifier
from livt_core.models.vit import VisionTransformer

__all__ = [
    "MaskedAutoencoderViT",
    "VisionTransformer",
    "create_model",
    "get_2d_sincos_pos_embed",
    "interpolate_pos_embed",
    "is_mae_model",
    "list_models",
    "load_encoder_into_classifier",
    "mae",
    "register_model",
    "vit",
]
