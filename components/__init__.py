"""KFP lightweight components: one module per step, each a thin wrapper over ``cityscale.steps``.

Every component runs in the pipeline image (``CITYSCALE_IMAGE``, Dockerfile) with the package preinstalled,
so no component installs anything at run time.
"""

from cityscale.config import get_settings

IMAGE = get_settings().image
