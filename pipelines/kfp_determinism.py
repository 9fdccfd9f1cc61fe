"""Make the kfp SDK name a nested pipeline's components the same way in every process.

kfp 2.17.3 folds a nested pipeline (``monitoring`` nests ``training``, which nests its gate-and-deploy
sub-pipeline twice) into the outer one in ``pipeline_spec_builder._merge_component_spec``, giving each inner
component a name that is unique in the outer pipeline. It takes the inner components in the iteration order
of a protobuf map, and the upb protobuf runtime orders map entries by a hash that is seeded per process: when
the inner pipeline holds both ``comp-condition-1`` and ``comp-condition-1-2`` and the outer one already has a
``comp-condition-1``, one process named them ``comp-condition-1-2``/``-1-2-2`` and the next ``-1-3``/``-1-2``.
The committed ``pipelines/compiled/monitoring.yaml`` then matched a fresh compile about half the time.

This module replaces that function with the same algorithm over the inner components in name order, before
any pipeline is defined (``pipelines/__init__.py`` imports it; kfp builds a pipeline's spec when its
``@dsl.pipeline`` decorator runs). Renaming stays correct in any order: new names are unique against the outer
pipeline and every name already handed out, and references are rewritten last-assigned first.
"""

from __future__ import annotations

import inspect

from kfp.compiler import pipeline_spec_builder
from kfp.dsl import utils
from kfp.pipeline_spec import pipeline_spec_pb2

_PATCHED = pipeline_spec_builder._merge_component_spec
if list(inspect.signature(_PATCHED).parameters) != ["main_pipeline_spec", "sub_pipeline_spec"]:
    raise RuntimeError(
        "kfp's pipeline_spec_builder._merge_component_spec changed its signature: check whether the installed kfp "
        "still names nested components in protobuf map order, then update or drop pipelines/kfp_determinism.py"
    )


def _rename_component_refs(spec: pipeline_spec_pb2.PipelineSpec, old: str, new: str) -> None:
    """Point every task of ``spec`` (root and inner DAGs) that uses component ``old`` at ``new``."""
    dags = [component.dag for component in spec.components.values() if component.HasField("dag")]
    for dag in [*dags, spec.root.dag]:
        for task in dag.tasks.values():
            if task.component_ref.name == old:
                task.component_ref.name = new


def merge_component_spec_in_name_order(
    main_pipeline_spec: pipeline_spec_pb2.PipelineSpec,
    sub_pipeline_spec: pipeline_spec_pb2.PipelineSpec,
) -> None:
    """kfp 2.17.3's ``_merge_component_spec``, taking the inner pipeline's components sorted by name."""
    renames: dict[str, str] = {}
    existing = list(main_pipeline_spec.components.keys())
    for name in sorted(sub_pipeline_spec.components.keys()):
        taken = existing + [n for pair in renames.items() for n in pair]
        renames[name] = utils.make_name_unique_by_adding_index(name=name, collection=taken, delimiter="-")
    for old, new in reversed(list(renames.items())):
        if new != old:
            _rename_component_refs(sub_pipeline_spec, old, new)
    for old, component in sub_pipeline_spec.components.items():
        main_pipeline_spec.components[renames[old]].CopyFrom(component)


pipeline_spec_builder._merge_component_spec = merge_component_spec_in_name_order
