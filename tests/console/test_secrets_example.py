"""`.streamlit/secrets.toml.example` documents every setting, and it is valid: as shipped
(all commented) and with every setting uncommented."""

from __future__ import annotations

import dataclasses
import re

from sync.settings import _SCALARS, load_settings
from sync.mapping import MappingProfile

from ui_helpers import ROOT

EXAMPLE = ROOT / ".streamlit" / "secrets.toml.example"
SETTING = re.compile(r"^# ((?:[A-Za-z_]+) = .*|\[users\.[a-z]+\])$")


def uncommented() -> str:
    return "\n".join(SETTING.sub(r"\1", line)
                     for line in EXAMPLE.read_text(encoding="utf-8").splitlines())


def test_every_setting_is_documented():
    text = uncommented()
    keys = {line.split("=")[0].strip() for line in text.splitlines()
            if re.match(r"^[A-Za-z_]+ = ", line)}
    assert set(_SCALARS) <= keys
    fields = {f.name for f in dataclasses.fields(MappingProfile)} - {"name"}
    assert fields | {"profile"} <= keys
    assert {"name", "role", "password_hash"} <= keys
    assert "[users.ana]" in text


def test_as_shipped_it_changes_nothing(tmp_path):
    path = tmp_path / "secrets.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings(environ={}, secrets_path=path)
    assert settings == load_settings(environ={}, secrets_path=tmp_path / "none.toml")


def test_with_everything_uncommented_it_loads(tmp_path):
    path = tmp_path / "secrets.toml"
    path.write_text(uncommented(), encoding="utf-8")
    settings = load_settings(environ={}, secrets_path=path)
    assert settings.oppen_env == "sandbox" and settings.base_url == "http://127.0.0.1:8765"
    assert settings.webhook_url.startswith("https://")
    assert sorted(settings.users) == ["ana", "bruno"]
    assert {u.role for u in settings.users.values()} == {"auditor", "admin"}
    assert settings.mapping.customer == "C00001" and settings.mapping.pos_width == 4
    assert dict(settings.mapping.voucher_codes) == {"A": "001", "B": "006", "Z": "083"}
