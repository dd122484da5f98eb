"""The built-in scripts of the Script dropdown, in A1111's order (its ``scripts/`` folder sorted by
file name)."""

from __future__ import annotations

from typing import Callable

from modules.service.scripts.api import ScriptRegistry
from modules.service.scripts.loopback import Loopback
from modules.service.scripts.outpainting import OutpaintingMk2, PoorMansOutpainting
from modules.service.scripts.prompt_matrix import PromptMatrix
from modules.service.scripts.prompts_from_file import PromptsFromFile
from modules.service.scripts.sd_upscale import SDUpscale
from modules.service.upscalers import UpscalerLibrary
from modules.service.scripts.xyz_plot import XYZPlot


def builtin_scripts(checkpoint_titles: Callable[[], list[str]], vae_files: Callable[[], list[str]],
                    upscalers: UpscalerLibrary | None = None) -> ScriptRegistry:
    """``vae_files`` lists the VAE dropdown's file names (the X/Y/Z plot's VAE axis); ``upscalers``
    the upscaler models SD upscale and the X/Y/Z plot's "Hires upscaler" axis may use."""
    return ScriptRegistry([
        Loopback(),
        OutpaintingMk2(),
        PoorMansOutpainting(),
        PromptMatrix(),
        PromptsFromFile(),
        SDUpscale(upscalers),
        XYZPlot(checkpoint_titles, vae_files, upscalers.names if upscalers else None),
    ])
