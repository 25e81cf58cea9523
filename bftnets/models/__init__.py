"""The bftnets model zoo: importing this package registers every model with timm (never overwriting a name)."""
from bftnets.models.mobilenetv1 import *  # noqa: F401,F403
from bftnets.models.mobilenetv3 import *  # noqa: F401,F403
from bftnets.models.shufflenetv2 import *  # noqa: F401,F403
from bftnets.models._helpers import list_bftnets_models  # noqa: F401
