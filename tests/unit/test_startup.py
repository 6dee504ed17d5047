"""What starting kubemr costs: ``import kubemr`` loads nothing until a name is used, and
every public name still resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kubemr


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_importing_kubemr_loads_none_of_its_modules_until_a_name_is_used() -> None:
    loaded = _modules_after("import kubemr")
    assert not {"kubemr.api", "kubemr.job", "kubemr.task", "pydantic", "boto3"} & loaded
    # Using a name loads the module that defines it, and what that needs: no more.
    loaded = _modules_after("import kubemr\nkubemr.MapReduce")
    assert "kubemr.job" in loaded
    assert not {"kubemr.api", "kubemr.task", "kubemr.runner"} & loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    # The lazy table and __all__ name the same names: a name added to one only fails here.
    assert sorted(kubemr.__all__) == sorted([*kubemr._EXPORTS, "__version__"])
    for name in kubemr.__all__:
        assert getattr(kubemr, name) is not None
    assert set(kubemr.__all__) <= set(dir(kubemr))
    from kubemr import SUM, MapReduce  # the from-import form too

    assert SUM is kubemr.SUM
    assert MapReduce.__module__ == "kubemr.job"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="MapReducer"):
        kubemr.MapReducer  # noqa: B018
