import pytest

from metamanip.envs.playtable import PlayTableEnv

from playtable_helpers import TINY_CAMERAS


@pytest.fixture
def tiny_env():
    env = PlayTableEnv(cameras=TINY_CAMERAS)
    yield env
    env.close()


@pytest.fixture(scope="module")
def states_env():
    env = PlayTableEnv(cameras={})
    yield env
    env.close()
