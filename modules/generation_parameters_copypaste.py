"""A1111 facade: the old name of ``modules.infotext_utils``."""

from modules.infotext_utils import parse_generation_parameters, read_info_from_image  # noqa: F401

__all__ = ["parse_generation_parameters", "read_info_from_image"]
