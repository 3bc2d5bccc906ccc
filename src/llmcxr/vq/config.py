"""Configs of the image tokenizer: the VQ-GAN architecture (`VQConfig`) and its training (`VQTrainConfig`).

Both are plain typed dataclasses; every checkpoint folder carries its `VQConfig` as `vq_config.json`
and every training run writes its `VQTrainConfig` beside its checkpoints (`llmcxr.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class VQConfig:
    """Architecture of the VQ-GAN (taming-transformers layout, Esser et al. 2021), grayscale in and out.

    The encoder halves the resolution once per entry of `channel_mult` after the first, so the token
    grid is `resolution / 2 ** (len(channel_mult) - 1)` per side.
    """

    resolution: int = 64
    """Image side in pixels (square images, one channel in [-1, 1])."""
    in_channels: int = 1
    """Image channels: 1 (grayscale CXR). The official LLM-CXR checkpoint has 3; `convert` folds it to 1."""
    base_channels: int = 32
    """Channels of the first level (taming's `ch`)."""
    channel_mult: tuple[int, ...] = (1, 2, 2, 3)
    """Channel multiplier per resolution level (taming's `ch_mult`); len - 1 = number of 2x downsamplings."""
    num_res_blocks: int = 1
    """ResNet blocks per level in the encoder (the decoder has one more per level, as in taming)."""
    attn_resolutions: tuple[int, ...] = (8,)
    """Feature-map sides at which self-attention blocks are inserted (taming: the lowest one, 16)."""
    z_channels: int = 64
    """Channels of the encoder output / decoder input (taming's `z_channels`)."""
    codebook_size: int = 512
    """Number of codes K (taming's `n_embed`); each code becomes one extra LM token."""
    codebook_dim: int = 16
    """Dimension of a code (taming's `embed_dim`). `quant_conv` projects `z_channels` down to it: a
    low-dimensional lookup keeps codebook usage high (ViT-VQGAN, Yu et al. 2022, sec. 3.2: 8-32 dims)."""
    l2_normalized_codes: bool = True
    """Look codes up by cosine similarity of l2-normalised vectors (ViT-VQGAN); False = taming's plain
    Euclidean lookup, used by checkpoints converted from the official LLM-CXR VQ-GAN."""
    commitment_weight: float = 0.25
    """beta of the commitment loss ||z - sg(e)||^2 (van den Oord et al. 2017; taming uses 0.25)."""
    usage_decay: float = 0.95
    """EMA decay of per-code hit counts used to find dead codes (Jukebox-style restarts, Dhariwal 2020)."""
    dead_code_threshold: float = 0.03
    """A code whose EMA hits per batch falls below this is restarted from a random encoder output of
    the batch. With decay 0.95 a code unused for ~70 steps is restarted. 0 disables restarts."""
    dropout: float = 0.0
    """Dropout inside ResNet blocks (taming: 0.0)."""
    preprocessing: str = "llmcxr"
    """The pixel pipeline its images go through (``llmcxr.imaging.PIXEL_PIPELINES``): "llmcxr", or
    "official" for a VQ-GAN converted from the published LLM-CXR (8-bit Lanczos, full JPEG decode,
    torchvision's crop), so its codes match the ones the published LM was trained on."""

    @property
    def grid_size(self) -> int:
        """Tokens per side of the code grid."""
        return self.resolution // 2 ** (len(self.channel_mult) - 1)

    @property
    def num_tokens(self) -> int:
        """Tokens per image (row-major grid)."""
        return self.grid_size**2

    @classmethod
    def tiny(cls) -> VQConfig:
        """64 px, f8 -> 8x8 = 64 tokens, 512 codes, 2.2M parameters (8.8 MB in float32).

        Small enough to train on a 2-core CPU in 30 minutes, to ship in the repository (<10 MB), and
        for a tiny LM to learn 64-token images on CPU. 512 codes: 64 tokens x ~100 held-out images
        already hit every code of a uniform 512-code book many times, so usage can be measured.
        """
        return cls(
            resolution=64,
            base_channels=32,
            channel_mult=(1, 2, 2, 3),
            num_res_blocks=1,
            attn_resolutions=(8,),
            z_channels=64,
            codebook_size=512,
            codebook_dim=16,
        )

    @classmethod
    def grid16(cls) -> VQConfig:
        """128 px, f8 -> 16x16 = 256 tokens (the paper's token count), 1024 codes, 2.2M parameters:
        the tiny network at twice the resolution, so it trains on CPU (4x the compute per image)."""
        return cls(
            resolution=128,
            base_channels=32,
            channel_mult=(1, 2, 2, 3),
            num_res_blocks=1,
            attn_resolutions=(16,),
            z_channels=64,
            codebook_size=1024,
            codebook_dim=16,
        )

    @classmethod
    def paper(cls) -> VQConfig:
        """The paper's tokenizer: 256 px, f16 -> 16x16 = 256 tokens, 1024 codes, taming's channels
        (ch 128, ch_mult 1,1,2,2,4, 2 res blocks, attention at 16, z 256, embed_dim 256; LLM-CXR's
        released VQ-GAN config). Module names match taming's one to one (see `convert`). We keep our
        l2-normalised lookup for training from scratch; converted checkpoints switch it off."""
        return cls(
            resolution=256,
            base_channels=128,
            channel_mult=(1, 1, 2, 2, 4),
            num_res_blocks=2,
            attn_resolutions=(16,),
            z_channels=256,
            codebook_size=1024,
            codebook_dim=256,
        )


@dataclass
class VQTrainConfig:
    """One VQ-GAN training run (`llmcxr vq train --config recipes/vq/tiny.yaml`)."""

    data: Path = Path("../shared/data/cxr-real/manifest.csv")
    """A folder of images or a CSV/JSONL manifest (`llmcxr.imaging.list_images`)."""
    output_dir: Path = Path("runs/vq-tiny")
    """Checkpoints, samples, metrics.jsonl and the final model (`final/`) go here."""
    model: VQConfig = field(default_factory=VQConfig.tiny)
    """The architecture to train."""
    patient_column: str = "patient"
    """Manifest column that groups images of one patient: the held-out split never splits a patient.
    Missing column (or a folder) = each image is its own patient."""
    holdout_fraction: float = 0.15
    """Fraction of patients held out for evaluation (PSNR, SSIM, codebook usage)."""
    split_column: str = ""
    """Manifest column holding a predefined split (a synthetic world's `split`): when set, training uses
    the rows marked `train` and evaluation those marked `validate` (test rows are never seen);
    `patient_column` and `holdout_fraction` are then unused."""
    init_from: Path | None = None
    """A VQ-GAN folder to start from instead of random weights (fine-tuning, e.g. the shipped real-CXR
    tokenizer adapted to the synthetic world); its architecture must equal `model`."""
    seed: int = 0
    """Seeds the split, the initialisation, augmentation and batch order."""
    steps: int = 2000
    """Optimizer steps (stops early when `time_budget_s` runs out)."""
    time_budget_s: float = 0.0
    """Wall-clock budget in seconds for this invocation; 0 = no budget."""
    batch_size: int = 16
    """Images per step."""
    lr: float = 2e-4
    """AdamW learning rate for generator and discriminator (linear warm-up, cosine decay)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    betas: tuple[float, float] = (0.5, 0.9)
    """Adam betas (taming: 0.5, 0.9)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    l1_weight: float = 1.0
    """Weight of the L1 reconstruction loss."""
    l2_weight: float = 1.0
    """Weight of an MSE term: it is what PSNR measures, and keeps the decoder from trading it away."""
    perceptual_weight: float = 0.1
    """Weight of the perceptual loss (LPIPS if `lpips_weights` is set, else the random-feature loss)."""
    clinical_weight: float = 0.0
    """Weight of the clinical feature loss (LLM-CXR): feature matching on a CXR classifier
    (torchxrayvision DenseNet-121 when `xrv_densenet_weights` is set, else the finding classifier in
    `clinical_classifier`, else the discriminator's features)."""
    adversarial_weight: float = 0.1
    """Weight of the hinge GAN loss, times taming's adaptive last-layer gradient ratio."""
    discriminator_start: int = 1000
    """Step at which the discriminator starts (taming: `disc_start`): reconstructions first."""
    discriminator_channels: int = 32
    """Channels of the first PatchGAN layer (taming: 64)."""
    discriminator_layers: int = 2
    """Strided layers of the PatchGAN (taming: 3)."""
    augment: bool = True
    """Small random affine (rotation, scale, shift) and brightness/contrast jitter of training images."""
    precision: str = "auto"
    """'auto' (bf16 autocast on GPU, fp32 on CPU: bf16 convolutions measured 4x slower than fp32 on this
    CPU, which lacks AVX512-BF16), 'bf16' (autocast on any device) or 'fp32'."""
    checkpoint_every: int = 100
    """Steps between resumable checkpoints (model, optimizers, step, RNG)."""
    eval_every: int = 250
    """Steps between held-out evaluations (metrics.jsonl) and sample grids (samples/*.png)."""
    eval_max_images: int = 256
    """Cap on held-out images evaluated during training (the final evaluation uses all)."""
    num_threads: int = 1
    """torch CPU threads. 1 by default: on this shared 2-core machine one thread measured 2.4x faster
    than two (2.3 vs 5.5 s per tiny step) because OpenMP threads spin-wait for a busy core."""
    lpips_weights: Path | None = None
    """Optional LPIPS (VGG16) weights as safetensors, e.g. extracted from the LLM-CXR checkpoint by
    `llmcxr vq convert`; None = the offline random-feature perceptual loss."""
    decoder_only: bool = False
    """Train the decoder alone (encoder and codebook frozen, no dead-code restarts): the image tokens stay
    exactly as they were, so a language model trained on them keeps working, while the decoder learns to
    draw more of what the tokens hold (as Stable Diffusion's ft-MSE autoencoder was made)."""
    clinical_classifier: Path | None = None
    """Optional finding classifier folder (`llmcxr eval train-classifier`) for the clinical feature loss
    where no DenseNet weights exist (the synthetic world); used when `xrv_densenet_weights` is unset."""
    xrv_densenet_weights: Path | None = None
    """Optional torchxrayvision DenseNet-121 state dict (.safetensors, or .pt read with weights_only)."""
