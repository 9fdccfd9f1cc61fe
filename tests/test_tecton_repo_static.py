"""The Tecton repository declares every spec feature with the same name, window and aggregation.

Static: the repository is parsed with ``ast``, never imported, so this runs without the proprietary
``tecton`` package (and without a licence).
"""

from __future__ import annotations

import ast
from pathlib import Path

from cityscale.features.spec import SPEC

TECTON = Path(__file__).resolve().parents[1] / "feature_repo" / "tecton"
FUNCTIONS = {"mean": "mean", "sum": "sum", "count": "count", "stddev": "stddev_samp"}  # spec -> Tecton
TYPES = {
    "float32": "Float32",
    "float64": "Float64",
    "int64": "Int64",
    "string": "String",
    "float32_array": "Array(Float32)",
}


def _hours(node: ast.AST) -> float:
    """``timedelta(hours=.., days=..)`` as hours."""
    assert isinstance(node, ast.Call) and getattr(node.func, "id", "") == "timedelta", ast.dump(node)
    units = {"hours": 1, "days": 24, "minutes": 1 / 60}
    return sum(units[k.arg] * ast.literal_eval(k.value) for k in node.keywords)


def _type(node: ast.AST) -> str:
    return ast.unparse(node)


def _declared_views() -> dict[str, dict]:
    views = {}
    for path in sorted((TECTON / "features").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "batch_feature_view":
                    kw = {k.arg: k.value for k in deco.keywords}
                    name = ast.literal_eval(kw["name"]) if "name" in kw else node.name
                    features = {}
                    for item in kw["features"].elts:
                        kind = item.func.id
                        args = {k.arg: k.value for k in item.keywords}
                        if kind == "Aggregate":
                            features[ast.literal_eval(args["name"])] = {
                                "kind": "aggregate",
                                "function": ast.literal_eval(args["function"]),
                                "hours": _hours(args["time_window"]),
                                "input": ast.unparse(args["input_column"]),
                            }
                        else:
                            features[ast.literal_eval(item.args[0])] = {
                                "kind": "attribute",
                                "type": _type(item.args[1]),
                            }
                    views[name] = {"file": path.name, "kw": kw, "features": features}
    return views


def test_every_spec_feature_is_declared_in_the_tecton_repo_identically() -> None:
    views = _declared_views()
    assert set(views) == {v.name for v in SPEC.views}
    for view in SPEC.views:
        declared = views[view.name]
        kw = declared["kw"]
        assert declared["file"] == f"{view.name}.py"  # one file per feature view
        assert ast.literal_eval(kw["description"]) == view.description
        assert ast.literal_eval(kw["owner"]) == SPEC.owner
        assert ast.literal_eval(kw["tags"]) == view.tags
        assert _hours(kw["batch_schedule"]) == view.batch_schedule_hours
        assert ast.unparse(kw["entities"]) == f"[{view.entity}]"
        assert set(declared["features"]) == {f.name for f in view.features}, view.name
        for f in view.features:
            got = declared["features"][f.name]
            if f.kind == "aggregate":
                assert got == {
                    "kind": "aggregate",
                    "function": FUNCTIONS[f.function],
                    "hours": f.window_hours,
                    "input": "PEDESTRIANS",
                }, f.name
                assert _hours(kw["aggregation_interval"]) == 1
            else:
                assert got == {"kind": "attribute", "type": TYPES[f.dtype]}, f.name
        if view.ttl_hours and view.tags.get("kind") != "aggregate":  # aggregations carry their own windows
            assert _hours(kw["ttl"]) == view.ttl_hours


def test_tecton_repo_layout_services_and_licence_notice() -> None:
    assert (TECTON / ".tecton").exists() and (TECTON / "repo.yaml").exists()
    assert "Tecton Proprietary" in (TECTON / "repo.yaml").read_text()
    assert "tecton[rift]==1.2.13" in (TECTON / "requirements.txt").read_text()
    entities = ast.parse((TECTON / "entities.py").read_text())
    names = {
        ast.literal_eval(k.value)
        for n in ast.walk(entities)
        if isinstance(n, ast.Call)
        for k in n.keywords
        if k.arg == "name"
    }
    assert names == {e.name for e in SPEC.entities}
    sources = {p.stem for p in (TECTON / "data_sources").glob("*.py") if p.stem != "__init__"}
    raw_push = {p.name for p in SPEC.push_sources if p.raw_fields}  # Feast-only push sources carry computed rows
    assert sources == {s.name for s in SPEC.sources if "{features}" not in s.uri} | raw_push  # one file per source
    services = ast.parse((TECTON / "feature_services" / "services.py").read_text())
    declared = {}
    for node in ast.walk(services):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "FeatureService":
            kw = {k.arg: k.value for k in node.keywords}
            declared[ast.literal_eval(kw["name"])] = [e.id for e in kw["features"].elts]
    assert declared == {s.name: list(s.views) for s in SPEC.services}


def test_default_path_never_imports_tecton() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cityscale.features.training_set, cityscale.features.online, cityscale.features.feast_backend, "
        "cityscale.cli; assert 'tecton' not in sys.modules and 'tecton_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
