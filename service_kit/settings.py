"""Helpers to read settings from the environment and collect every problem at once.

`EnvReader` reads typed, bounded values and notes each bad one; `read_secret` reads a secret
from its variable or from the file `<NAME>_FILE` names (how container platforms hand secrets
over). Both services build their settings with these, so a variable is read, bounded and
reported the same way in each. No message ever holds a secret's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class SettingsError(ValueError):
    """Raised with one line per bad environment variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        value = self._env.get(name, default)
        if value is None or value == "":
            if default is None:
                self.problems.append(f"{name}: required, not set")
            return default or ""
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self._env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name}: {raw!r} is not an integer")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name}: {value} is outside {low}..{high}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name}: {raw!r} is not a boolean (true/false)")
        return default

    def done(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def read_secret(env: Mapping[str, str], r: EnvReader, name: str, *, required: bool) -> str:
    """NAME, or the contents of the file NAME_FILE names (stripped: files end in a newline).

    A problem is noted when the file cannot be read, or when the secret is required and
    comes out empty (unset, or an empty file). Messages name the variable and the file,
    never the value."""
    path = env.get(f"{name}_FILE", "")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            r.problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror}")
            return ""
    else:
        value = env.get(name, "")
    if required and not value:
        r.problems.append(f"{name} (or {name}_FILE): required, not set")
    return value
