"""The generation processes (txt2img now; img2img and hires fix later) and their requests."""
