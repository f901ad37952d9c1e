"""Run at start-up by every server process the tests start (this folder heads its PYTHONPATH):
the test guards of the test process, reporting into the file that `TEST_GUARD_REPORT` names."""

import os
from pathlib import Path

_REPORT = os.environ.get("TEST_GUARD_REPORT")
if _REPORT:
    from tests.support import loop_guards, network_guard, violations

    violations.report_to_file(Path(_REPORT))
    network_guard.install()
    loop_guards.install()
