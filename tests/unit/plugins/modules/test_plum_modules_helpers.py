"""Pure helpers of plum_app: times."""

from __future__ import annotations

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.modules import plum_app

# -- plum_app ------------------------------------------------------------------------------------


def test_parse_time():
    assert plum_app.parse_time("1970-01-01T00:00:10.500Z") == 10.5
    assert plum_app.parse_time("1970-01-01T00:01:00Z") == 60
    assert plum_app.parse_time(None) is None
    assert plum_app.parse_time("yesterday") is None
