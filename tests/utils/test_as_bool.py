"""``monai_ext.utils.as_bool``: booleans from configs and from the ``monai.bundle run`` command line."""

from __future__ import annotations

import numpy as np
import pytest

from monai_ext.utils import as_bool


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True), (False, False), (1, True), (0, False), (np.bool_(True), True), (np.bool_(False), False),
        ("true", True), ("True", True), (" TRUE ", True), ("1", True), ("yes", True),
        ("false", False), ("False", False), ("0", False), ("no", False), (" No", False),
    ],
)
def test_values(value, expected):
    assert as_bool(value, "resume") is expected


@pytest.mark.parametrize("value", ["", "flase", "2", "none", "on"])
def test_bad_string_names_the_key(value):
    with pytest.raises(ValueError, match=r"resume must be a boolean \(true/false\), got '.*'"):
        as_bool(value, "resume")
