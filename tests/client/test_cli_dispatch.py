"""The ``livt`` dispatcher: every command is registered by the module ``COMMANDS`` names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from livt.cli import COMMAND_MODULES, COMMANDS, build_parser


def _registered(modules) -> set[str]:
    return set(build_parser(modules)._subparsers._group_actions[0].choices)  # noqa: SLF001


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_commands_map_matches_what_each_module_registers(module):
    expected = {name for name, owner in COMMANDS.items() if owner == module}
    assert _registered((module,)) == expected


def test_client_command_does_not_import_torch():
    code = (
        "import sys\n"
        "from livt.cli import main\n"
        "try:\n"
        "    main(['jobs', '--url', 'http://127.0.0.1:9', '--token', 'x'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
