"""The package as pip builds it: its dependencies (requirements.txt), Python, console script, version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import cifar
from tests.factory import REPO


def test_the_package_builds_with_its_requirements_and_a_cifar_command(tmp_path):
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ and *.egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "cifar", source / "cifar", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    built = subprocess.run(
        [*command, "-w", str(tmp_path), str(source)], capture_output=True, text=True, env=env
    )
    assert built.returncode == 0, built.stderr[-2000:]
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode().splitlines()
        entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    required = sorted(line.split(":", 1)[1].strip().split("<")[0].split(">")[0] for line in metadata
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)  # fmt: skip
    extras = [line for line in metadata if line.startswith("Requires-Dist:") and "extra ==" in line]
    assert extras == [
        'Requires-Dist: tensorflow[and-cuda]<2.22,>=2.18; extra == "gpu"',
        'Requires-Dist: tf2onnx>=1.16; extra == "onnx"',
        'Requires-Dist: onnxruntime>=1.19; extra == "onnx"',
    ], extras
    listed = (REPO / "requirements.txt").read_text().splitlines()
    wanted = sorted(line.split("<")[0].split(">")[0] for line in listed if line and not line.startswith("#"))
    assert required == wanted
    assert "Requires-Python: >=3.11" in metadata and f"Version: {cifar.__version__}" in metadata
    assert "cifar = cifar.cli:main" in entry_points
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "cifar").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))  # every subpackage is in the wheel
    assert not any(name.startswith(("tests/", "dashboard/")) for name in names)


def test_every_third_party_import_of_the_product_is_a_declared_requirement():
    """A module the product imports but requirements.txt (or, for an optional feature, an extra of
    pyproject.toml) omits works only on the machine it was added on."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = [*(REPO / "requirements.txt").read_text().splitlines(), *(r for e in extras.values() for r in e)]
    declared = {
        line.split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")
        for line in lines
        if line.strip() and not line.startswith("#")
    }
    distributions = packages_distributions()
    files = [*REPO.glob("cifar/**/*.py"), *REPO.glob("dashboard/*.py"), *REPO.glob("app_pages/*.py")]
    imported = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"cifar", "dashboard", "app_pages"})
    assert files and "umap" in third_party and "keras" in third_party
    undeclared = {
        module: distributions.get(module, ["?"])
        for module in third_party
        if not {name.lower().replace("_", "-") for name in distributions.get(module, [])} & declared
    }
    assert not undeclared, f"imported but not in requirements.txt: {undeclared}"


def test_the_public_api_is_listed_and_importing_cifar_loads_no_tensorflow():
    """`cifar.__all__` names where a user's code starts; each name is the function its module defines,
    and `import cifar` alone loads neither TensorFlow nor pandas."""
    import subprocess
    import sys

    import cifar

    assert set(cifar.__all__) >= {"load_run_model", "runs_table", "compare", "list_runs", "load_run"}
    for _ in range(2):  # the second time from the package's attributes, once its modules are imported
        for name in cifar.__all__[1:]:
            value = getattr(cifar, name)
            assert callable(value) and value.__name__ == name, name
    code = "import sys, cifar; print('tensorflow' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
