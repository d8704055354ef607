"""transfer_utils: the tested helpers behind the executable book on transfer learning in PyTorch.

Import it as ``import transfer_utils as tu``; each chapter says which helpers it uses.
"""

from . import zoo
from .analysis import *  # noqa: F403
from .checkpoint import *  # noqa: F403
from .data import *  # noqa: F403
from .distill import *  # noqa: F403
from .exercises import *  # noqa: F403
from .experiments import *  # noqa: F403
from .features import *  # noqa: F403
from .finetune import *  # noqa: F403
from .models import *  # noqa: F403
from .multitask import *  # noqa: F403
from .param_efficient import *  # noqa: F403
from .pipelines import *  # noqa: F403
from .plots import *  # noqa: F403
from .runtime import *  # noqa: F403
from .surgery import *  # noqa: F403
from .training import *  # noqa: F403
from .transferability import *  # noqa: F403
from .widgets import *  # noqa: F403

__version__ = "0.1.0"
