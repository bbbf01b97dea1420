"""The committed URDFs are exactly what the generator writes from envs/layout.py."""
from metamanip.envs.playtable_urdf import ASSETS_DIR, asset_texts


def test_committed_assets_match_the_layout():
    for name, text in asset_texts().items():
        path = ASSETS_DIR / name
        assert path.exists(), f"{path} missing: run python -m metamanip.envs.playtable_urdf"
        assert path.read_text() == text, f"{name} is stale: run python -m metamanip.envs.playtable_urdf"
