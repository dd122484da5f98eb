"""A1111 facade: the old name of ``modules.infotext_utils`` (the same module object)."""

import sys

from modules import infotext_utils

sys.modules[__name__] = infotext_utils
