import pytest
from settings_standins import FakeSim, fake_detect, fake_make_scene_obs

from metamanip.settings import meta_env


@pytest.fixture
def fake_world(monkeypatch):
    """Route the settings layer's scene building and task detection to the stand-ins; return the sim class."""
    monkeypatch.setattr(meta_env, "make_scene_obs", fake_make_scene_obs)
    monkeypatch.setattr(meta_env, "detect_tasks", fake_detect)
    return FakeSim
