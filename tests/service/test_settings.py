"""The settings object: embedded defaults, production requirements, data roots and user paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from livt_core.errors import ConfigError
from livt_service.settings import Settings, bundled_data_root, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIVT_") and not name.startswith("LIVT_TEST_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_embedded_defaults_live_under_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.mode == "embedded"
    assert settings.database_url == f"sqlite:///{tmp_path}/livt.sqlite"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    assert settings.result_backend is None
    assert settings.artifact_dir == tmp_path / "artifacts"
    assert settings.data_roots[0] == tmp_path / "datasets"
    assert settings.job_artifact_dir("j_1") == tmp_path / "artifacts" / "j_1"


def test_default_data_roots_include_the_bundled_data(tmp_path):
    assert bundled_data_root().resolve() in Settings(data_dir=tmp_path).data_roots


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIVT_DATA_ROOTS", f"{tmp_path}/a, {tmp_path}/b")
    monkeypatch.setenv("LIVT_MAX_GPUS", "4")
    monkeypatch.setenv("LIVT_DEFAULT_QUEUE", "gpu")
    settings = get_settings()
    assert settings.data_roots == [tmp_path / "a", tmp_path / "b"]
    assert settings.max_gpus == 4
    assert settings.default_queue == "gpu"
    assert get_settings() is settings


def test_production_refuses_to_start_without_database_and_broker(monkeypatch):
    monkeypatch.setenv("LIVT_MODE", "production")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "LIVT_DATABASE_URL and LIVT_BROKER_URL must be set in production" in str(err.value)


def test_production_refuses_to_start_without_broker(monkeypatch):
    monkeypatch.setenv("LIVT_MODE", "production")
    monkeypatch.setenv("LIVT_DATABASE_URL", "postgresql+psycopg://livt@db/livt")
    with pytest.raises(ValidationError, match="LIVT_BROKER_URL must be set"):
        Settings()


def test_production_takes_postgres_and_redis_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIVT_MODE", "production")
    monkeypatch.setenv("LIVT_DATABASE_URL", "postgresql+psycopg://livt@db/livt")
    monkeypatch.setenv("LIVT_BROKER_URL", "redis://redis:6379/0")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://livt@db/livt"
    assert settings.broker_url == "redis://redis:6379/0"
    assert not settings.embedded


@pytest.fixture
def rooted(tmp_path) -> Settings:
    (tmp_path / "root" / "data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return Settings(data_dir=tmp_path / "state", data_roots=[tmp_path / "root"])


def test_resolve_user_path_inside_a_root(rooted, tmp_path):
    assert rooted.resolve_user_path(tmp_path / "root" / "data") == tmp_path / "root" / "data"


def test_resolve_user_path_relative_to_the_roots(rooted, tmp_path):
    assert rooted.resolve_user_path("data") == tmp_path / "root" / "data"


def test_resolve_user_path_outside_names_the_field_and_the_fix(rooted, tmp_path):
    with pytest.raises(ConfigError) as err:
        rooted.resolve_user_path(tmp_path / "outside", field="data.root")
    assert err.value.field == "data.root"
    assert "LIVT_DATA_ROOTS" in err.value.fix


def test_resolve_user_path_with_dotdot_is_outside(rooted):
    with pytest.raises(ConfigError):
        rooted.resolve_user_path("data/../../outside")


def test_resolve_user_path_follows_symlinks(rooted, tmp_path):
    os.symlink(tmp_path / "outside", tmp_path / "root" / "link")
    with pytest.raises(ConfigError):
        rooted.resolve_user_path(tmp_path / "root" / "link")


def test_resolve_user_path_into_a_root_through_a_symlink(rooted, tmp_path):
    os.symlink(tmp_path / "root" / "data", tmp_path / "outside" / "shortcut")
    resolved = rooted.resolve_user_path(Path(tmp_path / "outside" / "shortcut"))
    assert resolved == tmp_path / "root" / "data"
