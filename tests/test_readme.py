"""Every flow command the README shows composes and passes the config check, as the script would
run it: a documented line the check rejects is a broken promise."""

from __future__ import annotations

import itertools
import re
import shlex

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from transferlab.config import checked, compose, override_values, parsed

FLOW = re.compile(r"python flows/(adapt|compare|serve)\.py(.*)")


def readme_commands() -> list[str]:
    """The flow command lines of the README's bash blocks, continuation lines joined."""
    return [m.group(0) for line in readme_lines() if (m := FLOW.search(line))]


def readme_lines() -> list[str]:
    """Every line of the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return "\n".join(blocks).replace("\\\n", " ").splitlines()


def runs_of(command: str) -> list[list[str]]:
    """The override lists the command launches: one, or each combination of a multirun's sweeps."""
    args = [a for a in shlex.split(FLOW.match(command).group(2), comments=True) if a != "-m"]
    if "-m" not in command.split():
        return [args]
    choices = [[f"{o.key_or_group}={v}" for v in override_values(o)] if o.is_discrete_sweep() else [a]
               for a, o in zip(args, parsed(args))]
    return [list(run) for run in itertools.product(*choices)]


def test_the_readme_shows_the_commands_this_test_reads() -> None:
    commands = readme_commands()
    assert len(commands) >= 15 and any("trainer.devices=4" in c for c in commands)
    assert any(" -m " in c for c in commands) and any("flows/serve.py" in c for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_passes_the_config_check(command: str) -> None:
    for overrides in runs_of(command):
        cfg = checked(compose(overrides), f"README: {command}")
        for override in parsed(overrides):  # what the line sets is what the run gets
            key = override.key_or_group
            if "." in key and not key.startswith("hydra.") and not isinstance(override.value(), list):
                assert OmegaConf.select(cfg, key) == override.value(), key


def test_the_readme_prefect_server_is_as_quiet_offline_as_the_flows() -> None:
    """The flows turn Prefect's telemetry off (entry.QUIET_PREFECT_ENV); a server started by the
    README's line without it logs 'ERROR ... Failed to send telemetry' every 10 minutes offline."""
    from transferlab.entry import QUIET_PREFECT_ENV

    [line] = [line for line in readme_lines() if "prefect server start" in line]
    assert f"PREFECT_SERVER_ANALYTICS_ENABLED={QUIET_PREFECT_ENV['PREFECT_SERVER_ANALYTICS_ENABLED']}" in line
