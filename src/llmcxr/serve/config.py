"""What `llmcxr serve` runs with: one typed dataclass, safe by default (loopback, bounded everything)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.imaging import ImageLimits

LOOPBACK_NAMES = ("localhost",)


@dataclass
class ServeConfig:
    model: Path  # model folder written by `llmcxr train` (with its vq/ subfolder)
    # A second model for text instructions only (/v1/chat, the chat tab): an instruct base tuned with
    # llmcxr (checkpoints/llmcxr-smol) keeps its language; None: ``model`` answers them too.
    chat_model: Path | None = None
    host: str = "127.0.0.1"  # loopback only; another address is a deliberate choice (warned about)
    port: int = 7860
    max_queue: int = 64  # requests waiting for the model; one more gets 503
    timeout_s: float = 60.0  # per request, queue wait included; over it gets 504
    max_request_bytes: int = 20 * 1024 * 1024  # whole request body (uploads included); over it gets 413
    # Decoded pixels per uploaded image: real CXRs have at most ~4,300 x 4,300 (18.5 M); this bounds one
    # decode to ~0.3 GB (16-bit: 2 bytes stored, 4 as float32, plus PIL's copy), one decode at a time.
    max_image_pixels: int = 25_000_000
    read_timeout_s: float = 30.0  # request headers, and then the whole body, must arrive within this (408)
    max_upload_store_bytes: int = 256 * 1024 * 1024  # web-app uploads kept on disk at once (507 over it)
    upload_max_age_s: int = 900  # web-app uploads older than this are deleted
    max_text_chars: int = 4000  # each report / question / instruction
    max_new_tokens: int = 256  # longest text reply
    max_samples: int = 8  # images per report->CXR request in the web app
    device: str | None = None  # None: cuda if present, else cpu
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16
    threads: int = 0  # torch CPU threads; 0 = torch's default
    ui: bool = True  # mount the Gradio web app at /

    def check(self) -> None:
        """Raise BadInputError for a setting that cannot work."""
        bounds = {
            "port": (self.port, 1, 65535),
            "max_queue": (self.max_queue, 1, None),
            "max_request_bytes": (self.max_request_bytes, 1, None),
            "max_text_chars": (self.max_text_chars, 1, None),
            "max_new_tokens": (self.max_new_tokens, 1, None),
            "max_samples": (self.max_samples, 1, None),
            "max_image_pixels": (self.max_image_pixels, 4096, None),
            "max_upload_store_bytes": (self.max_upload_store_bytes, 1, None),
            "upload_max_age_s": (self.upload_max_age_s, 1, None),
        }
        for name, (value, low, high) in bounds.items():
            if value < low or (high is not None and value > high):
                raise BadInputError(name, f"{value} is outside {low}..{high or 'any'}")
        for name in ("timeout_s", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise BadInputError(name, f"must be positive, got {getattr(self, name)}")

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels)

    def is_loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
