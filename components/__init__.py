"""KFP lightweight components: one module per step, each a thin wrapper over ``cityscale.steps``.

Every component runs in the project image (``CITYSCALE_IMAGE``) with the package preinstalled,
so no component installs anything at run time.
"""

from cityscale.config import get_settings

IMAGE = get_settings().image
