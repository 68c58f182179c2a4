"""Test helpers: a provisioner Config pointing at the real test servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from provisioner.config import Config, load_config
from provisioner.embedded.slapd import EmbeddedSlapd


def write_config(
    tmp_path: Path,
    slapd: EmbeddedSlapd,
    *,
    hs_url: str = "http://127.0.0.1:1",
    token: str = "unused",
    server_name: str = "example.test",
    layout: dict[str, Any] | None = None,
    safety: dict[str, Any] | None = None,
    directory: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    (tmp_path / "ldap_pw").write_text(slapd.service_password)
    (tmp_path / "token").write_text(token)
    data: dict[str, Any] = {
        "homeserver": {"url": hs_url, "server_name": server_name, "admin_token_file": "token"},
        "directory": {
            "uri": slapd.uri,
            "bind_dn": slapd.service_dn,
            "bind_password_file": "ldap_pw",
            "base_dn": slapd.suffix,
            "disabled_filter": "(employeeType=disabled)",
            **(directory or {}),
        },
        "layout": {"max_room_size": 50, "org_name": "Правительство Москвы", **(layout or {})},
        "safety": safety or {},
        "sync": {"concurrency": 8, "state_dir": "state"},
        "exclude": [f"@admin:{server_name}"],
        **(extra or {}),
    }
    path = tmp_path / "civmatrix.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def config(tmp_path: Path, slapd: EmbeddedSlapd, **kwargs: Any) -> Config:
    return load_config(write_config(tmp_path, slapd, **kwargs), token_required=True)
