"""The command line's exit codes, defined once, and the error each comes from."""

from __future__ import annotations

import pytest

from kubemr import termination
from kubemr.cli.exits import ExitCode, exit_code_for, for_signal
from kubemr.cluster.errors import (
    ApiRefused,
    CrdMissing,
    Forbidden,
    JobDeleted,
    NoCluster,
    NotAuthenticated,
    NotFound,
    Unreachable,
    WaitTimeout,
)
from kubemr.errors import JobDefinitionError, OptionError
from kubemr.storage import StorageError


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (WaitTimeout("t"), 124),
        (JobDeleted("d"), 1),
        (NotFound("n"), 5),
        (CrdMissing("c"), 6),
        (Forbidden("create", "mapreducejobs", "kubemr.dev", "ns", None), 7),
        (NotAuthenticated("a"), 7),
        (NoCluster("n"), 8),
        (Unreachable("u"), 8),
        (ApiRefused("r", 422), 9),
        (OptionError("o"), 2),
        (JobDefinitionError("j"), 2),
        (StorageError("s"), 2),
    ],
)
def test_each_error_has_its_code(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


def test_codes_are_distinct_and_apart_from_the_worker_and_controller_codes() -> None:
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes))
    worker = {
        termination.EXIT_BAD_INPUT,
        termination.EXIT_VERSION_SKEW,
        termination.EXIT_TERMINATED,
    }
    assert not worker & set(codes)
    assert 75 not in codes  # the controller's "lost its lease"
    assert for_signal(2) == 130 and for_signal(15) == 143


def test_an_error_without_a_code_is_a_bug() -> None:
    with pytest.raises(TypeError):
        exit_code_for(ValueError("x"))


def test_a_refusal_names_the_verb_the_resource_and_whom_to_ask() -> None:
    error = Forbidden("create", "mapreducejobs", "kubemr.dev", "team-a", "alice")
    assert str(error) == (
        "not allowed to create mapreducejobs in namespace team-a as alice (ask for RBAC: "
        "verb 'create' on 'mapreducejobs.kubemr.dev' in namespace team-a)"
    )
