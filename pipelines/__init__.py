"""Pipeline definitions, their compiler entry point and the local (kfp.local) runner."""

# Before any pipeline is defined: kfp builds each pipeline's spec when its @dsl.pipeline decorator runs.
from pipelines import kfp_determinism as _kfp_determinism  # noqa: F401  (patches kfp; see its docstring)
