"""Whether the sensors and schedules start running, decided when the definitions load.

A deployment starts with them stopped: until its policy, keyring and inbox are set up, a sensor would train on
whatever lands in the inbox and a schedule would run cycles nobody asked for, so an operator turns them on in
*Automation* (or sets MEMGOV_AUTOMATION=on). The demo's home is a playground built for watching the loop, so
`memgov demo` writes `automation.json` there to start them running."""

from __future__ import annotations

import json
import os

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from pipelines.deployment.workspace import default_home

ENV = "MEMGOV_AUTOMATION"
FILE = "automation.json"


def automation_on() -> bool:
    """MEMGOV_AUTOMATION (on/off) first, else the home's automation.json, else off."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("on", "off"):
        return value == "on"
    path = default_home() / FILE
    try:
        return bool(json.loads(path.read_text()).get("sensors_on"))
    except (OSError, ValueError, AttributeError):
        return False


def sensor_status() -> DefaultSensorStatus:
    return DefaultSensorStatus.RUNNING if automation_on() else DefaultSensorStatus.STOPPED


def schedule_status() -> DefaultScheduleStatus:
    return DefaultScheduleStatus.RUNNING if automation_on() else DefaultScheduleStatus.STOPPED


def switch_on(home, reason: str) -> None:
    """Start the home's sensors and schedules running at the next load of the definitions."""
    (home / FILE).write_text(json.dumps({"sensors_on": True, "why": reason}, indent=1) + "\n")
