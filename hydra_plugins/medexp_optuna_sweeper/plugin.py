"""What Hydra's plugin scan finds: the sweeper class and its config, `hydra/sweeper=medexp_optuna`.

Hydra instantiates a plugin only from a class defined under `hydra_plugins` (its `_target_` must start with
`hydra_plugins.` and name a class the scan found), so the class is subclassed here rather than re-exported;
the logic is all in medexp.sweep.sweeper. The scan executes this module before it is in sys.modules: no
dataclass (nor `from __future__ import annotations` with one) belongs here; the schema is in medexp.sweep.schema.
"""

import medexp.sweep.sweeper as _impl
from medexp.sweep.schema import register


class MedexpOptunaSweeper(_impl.MedexpOptunaSweeper):
    """medexp.sweep.sweeper.MedexpOptunaSweeper where Hydra looks; schema.PLUGIN_TARGET names this class."""


register()  # hydra/sweeper=medexp_optuna, in the ConfigStore when Hydra scans this module
