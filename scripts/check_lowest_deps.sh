#!/usr/bin/env bash
# Are pyproject.toml's lower bounds true? Builds a throwaway virtualenv (default .venv-lowest, or $1) in which
# every direct dependency of the library and of the `test` extra is at the LOWEST version its range allows
# (uv's --resolution lowest-direct), torch at its pin (a CPU wheel where one is on disk), and of the `workflow`
# extra Snakemake (the tests build wrappers' `snakemake` objects with it) and the cluster-generic plugin, then:
#   1. lists each of those requirements with the lowest release it allows on its own and the version installed:
#      one installed higher means another pin forces it up (the floor is then a lie; the script stops, exit 1);
#   2. runs the unit tests (.tests/unit) there, less the one that compares the environment with constraints.txt.
# Not the SLURM plugins: snakemake-executor-plugin-slurm 2.8.0 requires numpy>=2.4.5 and pandas>=2.3.3, so with
# the `workflow` extra those are the floors; the wrappers' environments install the library without it.
# Not part of `make test` (constraints.txt's exact versions are what CI tests): see CONTRIBUTING.md "Checks".
# Needs PyPI (uv downloads the old releases). Components other extras bring (FastAPI, Kubernetes, MLflow, SLURM,
# Azurite) are not installed: their tests skip, as on a laptop (CI is unset for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-lowest}
case $venv in -*)
	echo "usage: scripts/check_lowest_deps.sh [VENV_FOLDER] (default .venv-lowest; it is deleted and made anew)" >&2
	exit 2
	;;
esac
python=${PYTHON:-python3}
start=$(date +%s)

rm -rf "$venv"
"$python" -m venv "$venv"
requirements=$("$python" scripts/lowest_deps.py requirements)
torch_pin=$(echo "$requirements" | grep '^torch')
mapfile -t workflow_requirements < <(echo "$requirements" | grep '^snakemake')
# torch alone from pip (uv may not see the local CPU wheel), without its dependencies: they would come at their
# newest, and uv keeps what is installed (filelock, a floor of the test extra, came at 4.3 that way)
"$venv/bin/python" -m pip install --quiet uv
"$venv/bin/python" -m pip install --quiet --no-deps "$torch_pin"
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --resolution lowest-direct -e '.[test]' \
	"${workflow_requirements[@]}"
echo "# lowest-direct install took $(($(date +%s) - start)) s"
# The lowest release each requirement allows on its own, then each beside the version installed
"$python" scripts/lowest_deps.py direct >"$venv/direct.txt"
"$venv/bin/uv" pip compile --quiet --no-deps --no-header --no-annotate --resolution lowest \
	--python "$venv/bin/python" "$venv/direct.txt" -o "$venv/lowest.txt"
"$venv/bin/python" scripts/lowest_deps.py floors "$venv/lowest.txt"

# Modules that import what the k8s, service and workflow (SLURM plugin) extras bring, which are not installed
need_other_extras=(
	.tests/unit/test_k8s_executor.py .tests/unit/test_k8s_manifests.py .tests/unit/test_k8s_service_manifests.py
	.tests/unit/test_k8s_workload_identity.py .tests/unit/test_service_api.py .tests/unit/test_service_client.py
	.tests/unit/test_slurm_profile_checks.py .tests/unit/test_slurm_profile_claims.py
	.tests/unit/test_environments.py # checks that httpx and mlflow (service, tracking extras) are installed
)
tests_started=$(date +%s)
status=0
env -u CI PYTHONPATH="$PWD/src:$PWD/.tests:$PWD/executors" PATH="$PWD/$venv/bin:$PATH" \
	"$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${WORKERS:-2}" --dist loadgroup --timeout=600 \
	--deselect .tests/unit/test_project_files.py::test_the_test_environment_is_the_locked_one \
	--deselect .tests/unit/test_service_parts.py::test_no_tracing_without_an_otlp_endpoint_and_an_exporter_with_one \
	--deselect .tests/unit/test_service_parts.py::test_traces_carry_the_service_name_otel_service_name_gives \
	"${need_other_extras[@]/#/--ignore=}" .tests/unit || status=$?
echo "# unit tests at the lowest versions took $(($(date +%s) - tests_started)) s, exit $status"
echo "# check_lowest_deps.sh took $(($(date +%s) - start)) s in all"
exit "$status"
