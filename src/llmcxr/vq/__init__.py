"""The image tokenizer: a chest X-ray <-> a grid of codebook indices (VQ-GAN).

from llmcxr.vq import VQConfig, VQGAN, save_vqgan, load_vqgan, codebook_stats
model = load_vqgan("checkpoints/vq-tiny")
codes = model.encode(images)      # (B, 1, 64, 64) in [-1, 1] -> (B, 8, 8) int64
images = model.decode(codes)      # -> (B, 1, 64, 64) in [-1, 1]
"""

from llmcxr.vq.config import VQConfig, VQTrainConfig
from llmcxr.vq.model import VQGAN, load_vqgan, save_vqgan
from llmcxr.vq.quantizer import VectorQuantizer, codebook_stats
from llmcxr.vq.token_store import TokenStore, TokenStoreWriter

__all__ = [
    "VQConfig",
    "VQTrainConfig",
    "VQGAN",
    "VectorQuantizer",
    "codebook_stats",
    "load_vqgan",
    "save_vqgan",
    "TokenStore",
    "TokenStoreWriter",
]
