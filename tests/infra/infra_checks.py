"""Offline infrastructure checks for CityScale (run with the .venv-lint interpreter).

Sub-commands (each exits non-zero on the first class of failure it finds and prints every problem):

  hcl        parse every terraform/**/*.tf with the HCL2 parser (checkov exits 0 on syntax errors)
  helmfile   check helmfile.d state files: strict keys, pinned chart versions, declared repositories,
             existing local charts/values/bases, `needs` within the same file, unique releases
  render     render every helmfile values template (Go templates, Helm engine) for dev and prod with
             the Terraform-output fixtures, `helm lint --strict` the local charts, validate their
             values against values.schema.json and render them to build/manifests/<env>/
  validate   validate every rendered manifest: built-in kinds with kubernetes-validate --strict
             semantics, CRD kinds against the schemas in tests/infra/schemas (vendored upstream CRDs)

Only the standard library, PyYAML, jsonschema, kubernetes-validate, bc-python-hcl2 and helm-python-sdk
are used; all ship in requirements/infra-lint.txt.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HELMFILE_DIR = Path(os.environ.get("CITYSCALE_HELMFILE_DIR", REPO / "helmfile.d")).resolve()
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Vendored upstream CRDs and CityScale's own JSON schemas (tests/infra/schemas/README.md).
SCHEMAS = Path(__file__).resolve().parent / "schemas"
ENVIRONMENTS = ("dev", "prod")
# A sample git SHA standing in for --state-values-set image.tag=$(GIT_SHA).
SAMPLE_TAG = os.environ.get("CITYSCALE_IMAGE_TAG", "0123456789ab")
KUBE_VERSION = "1.33.0"


# CRD kind -> schema in SCHEMAS. ("crd", file, version) reads openAPIV3Schema of that version from an upstream
# CustomResourceDefinition; ("json", file) is a JSON schema written for CityScale.
CRD_SCHEMAS: dict[tuple[str, str], tuple[str, ...]] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): (
        "crd",
        "serving.kserve.io_inferenceservices.yaml",
        "v1beta1",
    ),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): ("crd", "trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"): (
        "crd",
        "trainer.kubeflow.org_clustertrainingruntimes.yaml",
        "v1alpha1",
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("json", "monitoring.coreos.com_prometheusrules.json"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("json", "monitoring.coreos.com_podmonitors.json"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("json", "monitoring.coreos.com_servicemonitors.json"),
}


class Problems:
    def __init__(self, title: str) -> None:
        self.title = title
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def finish(self, ok_msg: str) -> int:
        if self.items:
            print(f"FAIL {self.title}: {len(self.items)} problem(s)")
            for item in self.items:
                print(f"  - {item}")
            return 1
        print(f"ok   {self.title}: {ok_msg}")
        return 0


# --------------------------------------------------------------------------------------------- hcl
def cmd_hcl(args: argparse.Namespace) -> int:
    import hcl2  # bc-python-hcl2 (checkov's fork of python-hcl2)

    probs = Problems("hcl-parse")
    files = sorted(Path(args.root).rglob("*.tf"))
    files = [f for f in files if ".terraform" not in f.parts]
    if not files:
        probs.add(f"no .tf files under {args.root}")
    for path in files:
        try:
            hcl2.loads(path.read_text())
        except Exception as exc:  # lark raises several exception types
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            probs.add(f"{shown}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return probs.finish(f"{len(files)} files parsed")


def cmd_hcl_json(args: argparse.Namespace) -> int:
    """Print the parsed HCL of each file as JSON (used by the pytest suite, which has no HCL parser)."""
    import hcl2

    out = {}
    for f in args.files:
        out[f] = hcl2.loads(Path(f).read_text())
    json.dump(out, sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------- helmfile
STATE_KEYS = {"bases", "repositories", "releases", "helmDefaults", "environments", "missingFileHandler"}
REPO_KEYS = {"name", "url", "oci"}
RELEASE_KEYS = {
    "name",
    "namespace",
    "chart",
    "version",
    "labels",
    "values",
    "needs",
    "createNamespace",
    "installed",
    "wait",
    "timeout",
    "atomic",
    "condition",
}
HELM_DEFAULT_KEYS = {
    "wait",
    "waitForJobs",
    "timeout",
    "atomic",
    "cleanupOnFail",
    "createNamespace",
    "historyMax",
    "recreatePods",
    "force",
    "verify",
    "kubeContext",
}
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_VALUES_GENERATED = re.compile(r"^\.\./build/terraform/(dev|prod)\.helmfile-values\.json$")


def state_files() -> list[Path]:
    return sorted(list(HELMFILE_DIR.glob("*.yaml")) + list(HELMFILE_DIR.glob("*.yaml.gotmpl")))


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def check_unknown(probs: Problems, where: str, obj: dict, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            probs.add(f"{where}: unknown key {key!r}")


def cmd_helmfile(args: argparse.Namespace) -> int:
    probs = Problems("helmfile-state")
    files = state_files()
    if not files:
        probs.add("no state files in helmfile.d")
    seen_releases: dict[str, str] = {}
    env_sets: dict[str, set[str]] = {}
    prefixes: list[str] = []
    for path in files:
        rel = path.relative_to(HELMFILE_DIR.parent)
        if path.name.endswith(".gotmpl"):
            probs.add(f"{rel}: state files are plain YAML (only values files are templates)")
            continue
        if not re.match(r"^\d{2}-[a-z0-9-]+\.yaml$", path.name):
            probs.add(f"{rel}: state files are named NN-name.yaml so helmfile applies them in order")
        prefixes.append(path.name[:2])
        state = load_yaml(path)
        if not isinstance(state, dict):
            probs.add(f"{rel}: not a mapping")
            continue
        check_unknown(probs, str(rel), state, STATE_KEYS)
        # bases
        envs: set[str] = set()
        for base in state.get("bases", []) or []:
            bpath = HELMFILE_DIR / base
            if not bpath.is_file():
                probs.add(f"{rel}: base {base} does not exist")
                continue
            bstate = load_yaml(bpath) or {}
            check_unknown(probs, f"{rel} -> {base}", bstate, STATE_KEYS - {"releases", "repositories"})
            for hk in bstate.get("helmDefaults") or {}:
                if hk not in HELM_DEFAULT_KEYS:
                    probs.add(f"{base}: unknown helmDefaults key {hk!r}")
            for env, spec in (bstate.get("environments") or {}).items():
                envs.add(env)
                for vf in (spec or {}).get("values", []) or []:
                    if not isinstance(vf, str):
                        continue
                    if ENV_VALUES_GENERATED.match(vf):
                        if f"/{env}." not in vf:
                            probs.add(f"{base}: environment {env} reads another environment's outputs: {vf}")
                        continue
                    if not (HELMFILE_DIR / vf).is_file():
                        probs.add(f"{base}: environment {env} values file {vf} does not exist")
        env_sets[str(rel)] = envs
        if not envs:
            probs.add(f"{rel}: no environments (add bases/environments.yaml to bases)")
        repos = {}
        for repo in state.get("repositories", []) or []:
            check_unknown(probs, f"{rel} repository", repo, REPO_KEYS)
            if not str(repo.get("url", "")).startswith("https://"):
                probs.add(f"{rel}: repository {repo.get('name')} must use https")
            repos[repo.get("name")] = repo
        releases = state.get("releases", []) or []
        if not releases:
            probs.add(f"{rel}: no releases")
        local_ids = set()
        for r in releases:
            name, ns = r.get("name"), r.get("namespace")
            where = f"{rel} release {name}"
            check_unknown(probs, where, r, RELEASE_KEYS)
            if not name or not DNS1123.match(str(name)):
                probs.add(f"{where}: invalid name")
            if not ns or not DNS1123.match(str(ns)):
                probs.add(f"{where}: namespace is required and must be a DNS-1123 label")
            rid = f"{ns}/{name}"
            if rid in seen_releases:
                probs.add(f"{where}: duplicate of release in {seen_releases[rid]}")
            seen_releases[rid] = str(rel)
            local_ids.add(rid)
            chart = str(r.get("chart", ""))
            version = r.get("version")
            if chart.startswith("./") or chart.startswith("../"):
                cdir = (HELMFILE_DIR / chart).resolve()
                if not ((cdir / "Chart.yaml").is_file() or (cdir / "kustomization.yaml").is_file()):
                    probs.add(f"{where}: local chart {chart} has no Chart.yaml or kustomization.yaml")
                if version is not None:
                    probs.add(f"{where}: local charts take their version from Chart.yaml")
                if (cdir / "kustomization.yaml").is_file():
                    check_kustomization(probs, cdir / "kustomization.yaml")
            else:
                if chart.startswith("oci://") or "/" in chart and chart.split("/", 1)[0] in repos:
                    pass
                else:
                    probs.add(f"{where}: chart {chart!r} is neither oci://, a declared repository/chart, nor ./local")
                if not version or not EXACT_VERSION.match(str(version)):
                    probs.add(f"{where}: remote chart must pin an exact version, got {version!r}")
            for vf in r.get("values", []) or []:
                if not isinstance(vf, str):
                    probs.add(f"{where}: inline values are not allowed; use a values/ file")
                    continue
                if not (HELMFILE_DIR / vf).is_file():
                    probs.add(f"{where}: values file {vf} does not exist")
        for r in releases:
            for need in r.get("needs", []) or []:
                if need not in local_ids:
                    probs.add(
                        f"{rel} release {r.get('name')}: needs {need!r} is not a release of this file "
                        "(helmfile resolves needs per state file; order files by name instead)"
                    )
        check_needs_cycles(probs, str(rel), releases)
    if len(set(prefixes)) != len(prefixes):
        probs.add("two state files share the same NN- order prefix")
    all_envs = {frozenset(v) for v in env_sets.values() if v}
    if len(all_envs) > 1:
        probs.add(f"state files declare different environments: {env_sets}")
    for v in env_sets.values():
        if v and set(v) != set(ENVIRONMENTS):
            probs.add(f"environments must be exactly {ENVIRONMENTS}, got {sorted(v)}")
            break
    return probs.finish(f"{len(files)} state files, {len(seen_releases)} releases")


def check_needs_cycles(probs: Problems, rel: str, releases: list[dict]) -> None:
    graph = {f"{r.get('namespace')}/{r.get('name')}": list(r.get("needs", []) or []) for r in releases}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if state.get(node) == 1:
            probs.add(f"{rel}: needs cycle {' -> '.join(stack + [node])}")
            return
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph.get(node, []):
            visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def check_kustomization(probs: Problems, path: Path) -> None:
    k = load_yaml(path)
    rel = path.relative_to(HELMFILE_DIR.parent)
    if k.get("kind") != "Kustomization" or k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        probs.add(f"{rel}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    for res in k.get("resources", []) or []:
        if "://" in res or res.startswith("github.com/"):
            if not re.search(r"\?ref=v?\d+\.\d+\.\d+$", res):
                probs.add(f"{rel}: remote resource {res} must pin ?ref=<release tag>")
        elif not (path.parent / res).exists():
            probs.add(f"{rel}: resource {res} does not exist")


# ------------------------------------------------------------------------------------------ render
def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def environment_values(env: str, overrides: dict | None = None) -> dict:
    values: dict = {}
    for f in ("environments/common.yaml", f"environments/{env}.yaml"):
        values = deep_merge(values, load_yaml(HELMFILE_DIR / f) or {})
    tf = json.loads((FIXTURES / f"helmfile-values.{env}.json").read_text())
    values = deep_merge(values, tf)
    values = deep_merge(values, {"image": {"tag": SAMPLE_TAG}})
    if overrides:
        values = deep_merge(values, overrides)
    return values


def render_gotmpl(helm: Any, source: str, values: dict, name: str) -> str:
    """Render a helmfile values template with the Helm engine (same Go template + sprig functions)."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "gotmpl"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: gotmpl\nversion: 0.0.0\n")
        (chart / "templates" / "values.yaml").write_text(source)
        with helm.Chart.load(str(chart)) as ch:
            out = ch.render(values, name="helmfile", namespace="default")
        return out["gotmpl/templates/values.yaml"]


def releases_by_values_file() -> list[tuple[dict, Path]]:
    out = []
    for path in state_files():
        state = load_yaml(path) or {}
        for r in state.get("releases", []) or []:
            out.append((r, path))
    return out


def cmd_render(args: argparse.Namespace) -> int:
    import helm_python as helm
    import jsonschema

    probs = Problems("render")
    out_root = Path(args.out)
    if out_root.exists():
        shutil.rmtree(out_root)
    count = 0
    variants: list[tuple[str, str, dict | None]] = [(env, env, None) for env in ENVIRONMENTS]
    # Tecton licensees: the feature-backend release must render without Feast/Redis.
    variants.append(
        (
            "dev-tecton",
            "dev",
            {
                "featureBackend": {
                    "type": "tecton",
                    "tecton": {"url": "https://acme.tecton.ai", "workspace": "cityscale"},
                }
            },
        )
    )
    for label, env, overrides in variants:
        values = environment_values(env, overrides)
        env_dir = out_root / label
        env_dir.mkdir(parents=True, exist_ok=True)
        for release, _state_path in releases_by_values_file():
            rname = release["name"]
            merged_values: dict = {}
            for vf in release.get("values", []) or []:
                src = (HELMFILE_DIR / vf).read_text()
                if vf.endswith(".gotmpl"):
                    try:
                        text = render_gotmpl(helm, src, values, rname)
                    except Exception as exc:
                        probs.add(f"[{label}] {vf}: {exc}")
                        continue
                else:
                    text = src
                try:
                    doc = yaml.safe_load(text) or {}
                except yaml.YAMLError as exc:
                    probs.add(f"[{label}] {vf}: rendered values are not YAML: {exc}")
                    continue
                if not isinstance(doc, dict):
                    probs.add(f"[{label}] {vf}: rendered values are not a mapping")
                    continue
                (env_dir / f"values-{rname}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
                merged_values = deep_merge(merged_values, doc)
            chart = str(release.get("chart", ""))
            if not chart.startswith("./"):
                continue
            cdir = (HELMFILE_DIR / chart).resolve()
            if not (cdir / "Chart.yaml").is_file():
                continue  # kustomize directory: built by helmfile/chartify at deploy time (remote bases)
            if label.endswith("-tecton") and rname != "cityscale-feast":
                continue
            schema_path = cdir / "values.schema.json"
            with helm.Chart.load(str(cdir)) as ch:
                full = ch.merge_values(merged_values)
                if schema_path.is_file():
                    try:
                        jsonschema.validate(full, json.loads(schema_path.read_text()))
                    except jsonschema.ValidationError as exc:
                        probs.add(f"[{label}] {rname}: values do not match values.schema.json: {exc.message}")
                try:
                    ch.validate_schema(merged_values)
                except Exception as exc:
                    probs.add(f"[{label}] {rname}: helm schema validation: {exc}")
                try:
                    rendered = ch.render(merged_values, name=rname, namespace=release["namespace"], is_install=True)
                except Exception as exc:
                    probs.add(f"[{label}] {rname}: render failed: {exc}")
                    continue
            lint = helm.chart.lint(
                str(cdir), merged_values, strict=True, namespace=release["namespace"], kube_version=f"v{KUBE_VERSION}"
            )
            for msg in lint.get("messages", []):
                if msg.get("severity", 0) >= 2:
                    probs.add(f"[{label}] helm lint --strict {chart}: {msg.get('path')}: {msg.get('error')}")
            for err in lint.get("errors", []) or []:
                probs.add(f"[{label}] helm lint --strict {chart}: {err}")
            docs = []
            for tpl in sorted(rendered):
                body = rendered[tpl]
                if tpl.endswith("NOTES.txt") or not body.strip():
                    continue
                docs.append(f"# Source: {tpl}\n{body.strip()}\n")
            manifest = "---\n".join(docs)
            (env_dir / f"{rname}.yaml").write_text(manifest)
            count += 1
    return probs.finish(
        f"{count} chart renders written to {out_root.relative_to(REPO) if out_root.is_relative_to(REPO) else out_root}"
    )


# ---------------------------------------------------------------------------------------- validate
def iter_manifest_docs(root: Path) -> Iterable[tuple[Path, int, dict]]:
    for path in sorted(root.rglob("*.yaml")):
        if path.name.startswith("values-"):
            continue
        with path.open() as fh:
            for i, doc in enumerate(yaml.safe_load_all(fh)):
                if doc:
                    yield path, i, doc


def crd_schema(api_version: str, kind: str) -> dict | None:
    spec = CRD_SCHEMAS.get((api_version, kind))
    if spec is None:
        return None
    if spec[0] == "json":
        return json.loads((SCHEMAS / spec[1]).read_text())
    crd = load_yaml(SCHEMAS / spec[1])
    for ver in crd["spec"]["versions"]:
        if ver["name"] == spec[2]:
            return ver["schema"]["openAPIV3Schema"]
    raise KeyError(f"{spec[1]} has no version {spec[2]}")


def validate_docs(docs: Iterable[tuple[str, dict]], kube_version: str = KUBE_VERSION) -> list[str]:
    import jsonschema
    import kubernetes_validate

    problems: list[str] = []
    for where, doc in docs:
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        if (api_version, kind) in CRD_SCHEMAS:
            try:
                schema = crd_schema(api_version, kind)
                validator = jsonschema.Draft7Validator(schema)
                for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                    path = "/".join(str(p) for p in err.absolute_path)
                    problems.append(f"{where} {kind}: {path}: {err.message[:200]}")
            except (FileNotFoundError, KeyError) as exc:
                problems.append(f"{where} {kind}: schema unavailable: {exc}")
            continue
        if "." in group and not group.endswith(".k8s.io") and group not in ("apps", "batch", "policy"):
            problems.append(f"{where}: CRD kind {api_version} {kind} has no schema to validate against")
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path) if getattr(exc, "path", None) else ""
            problems.append(f"{where} {kind}/{doc.get('metadata', {}).get('name')}: {path}: {exc.message[:200]}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where} {kind}: no schema: {exc}")
        except kubernetes_validate.InvalidSchemaError as exc:
            problems.append(f"{where} {kind}: invalid schema: {exc}")
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    probs = Problems("manifests")
    roots = [Path(p) for p in args.paths]
    docs = []
    for root in roots:
        if root.is_file():
            with root.open() as fh:
                docs += [(f"{root}#{i}", d) for i, d in enumerate(yaml.safe_load_all(fh)) if d]
        else:
            docs += [
                (f"{p.relative_to(REPO) if p.is_relative_to(REPO) else p}#{i}", d)
                for p, i, d in iter_manifest_docs(root)
            ]
    if not docs:
        probs.add(f"no manifests found in {', '.join(map(str, roots))}")
    for msg in validate_docs(docs, args.kube_version):
        probs.add(msg)
    kinds = sorted({d.get("kind", "?") for _, d in docs})
    return probs.finish(f"{len(docs)} documents valid ({', '.join(kinds)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("hcl")
    p.add_argument("--root", default=str(REPO / "terraform"))
    p.set_defaults(func=cmd_hcl)
    p = sub.add_parser("hcl-json")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_hcl_json)
    p = sub.add_parser("helmfile")
    p.set_defaults(func=cmd_helmfile)
    p = sub.add_parser("render")
    p.add_argument("--out", default=str(REPO / "build" / "manifests"))
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("validate")
    p.add_argument("paths", nargs="*", default=[str(REPO / "build" / "manifests")])
    p.add_argument("--kube-version", default=KUBE_VERSION)
    p.set_defaults(func=cmd_validate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
