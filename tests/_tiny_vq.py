"""The micro VQ-GAN config the tests build on (no network, milliseconds per forward pass)."""

from __future__ import annotations

import dataclasses

from llmcxr.vq import VQConfig

# A few-thousand-parameter VQ-GAN: 16 px, f4 -> 4x4 codes, 32 codes of dim 4. Tests that need
# another shape derive it with dataclasses.replace, so the differences are visible at the call site.
MICRO_VQ = VQConfig(
    resolution=16,
    base_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    z_channels=8,
    codebook_size=32,
    codebook_dim=4,
)

# The VQ-GAN behind the tiny LLM-CXR model folders: 16 px, f4 -> 4 x 4 = 16 image tokens from a 16-code
# book, no attention: it builds in milliseconds.
LM_VQ = dataclasses.replace(MICRO_VQ, attn_resolutions=(), codebook_size=16)
