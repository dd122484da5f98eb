"""Live previews of a running sampler: a latent turned into a small RGB picture.

"Approx cheap" is a fixed linear map from the four latent channels to RGB (one matrix for the
SD1/SD2 VAE, one for the SDXL VAE): costless, at latent resolution. "Full" decodes with the VAE.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# latent channel → (R, G, B) contribution, fitted to each VAE's decoder output
_SD_COEFFICIENTS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
_SDXL_COEFFICIENTS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)

PREVIEW_METHODS = ("Approx cheap", "Full")


def cheap_approximation(latent: torch.Tensor, sdxl: bool = False) -> Image.Image:
    """One latent (C, H, W) or the first of a batch → an RGB picture of H×W pixels."""
    if latent.dim() == 4:
        latent = latent[0]
    if latent.shape[0] != 4:
        raise ValueError(f"a preview needs a 4-channel latent; got {latent.shape[0]} channels")
    weights = torch.tensor(_SDXL_COEFFICIENTS if sdxl else _SD_COEFFICIENTS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->rhw", latent.detach().float().cpu(), weights)
    pixels = ((rgb * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy()), "RGB")
