"""transfer_utils: the tested helpers behind the executable book on transfer learning in PyTorch.

Import it as ``import transfer_utils as tu``; every public name of every module is
re-exported here, so a notebook never needs to know which module a helper lives in.
The modules are organised by concept in four layers, and import only from the
layers above them in this list (and, within a layer, from modules listed before):

- core: runtime, data, checkpoint, surgery, models, training, inference, zoo
- methods: features, finetune, param_efficient, distill, adapt, multitask, zeroshot, privacy, distributed
- measure: analysis, experiments, diagnostics
- present: guide, plots, widgets, exercises

The README's package table says what each module is for.
"""

from . import zoo
from .runtime import *  # noqa: F403  (core)
from .data import *  # noqa: F403
from .checkpoint import *  # noqa: F403
from .surgery import *  # noqa: F403
from .models import *  # noqa: F403
from .training import *  # noqa: F403
from .inference import *  # noqa: F403
from .features import *  # noqa: F403  (methods)
from .finetune import *  # noqa: F403
from .param_efficient import *  # noqa: F403
from .distill import *  # noqa: F403
from .adapt import *  # noqa: F403
from .multitask import *  # noqa: F403
from .zeroshot import *  # noqa: F403
from .privacy import *  # noqa: F403
from .distributed import *  # noqa: F403
from .analysis import *  # noqa: F403  (measure)
from .experiments import *  # noqa: F403
from .diagnostics import *  # noqa: F403
from .guide import *  # noqa: F403  (present)
from .plots import *  # noqa: F403
from .widgets import *  # noqa: F403
from .exercises import *  # noqa: F403

__version__ = "0.2.0"
