"""Models shipped inside the package (each a folder with ``model.safetensors`` + ``card.json``)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent


def bundled_names() -> list[str]:
    """Names of the bundled models that are present."""
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "model.safetensors").is_file())


def bundled_path(name: str) -> Path:
    """Folder of the bundled model ``name``; a clear error if it is not there."""
    path = BUNDLED_DIR / name
    if not (path / "model.safetensors").is_file() or not (path / "card.json").is_file():
        have = bundled_names()
        raise FileNotFoundError(
            f"bundled model {name!r} is not installed (expected {path}/model.safetensors and "
            f"card.json); available: {', '.join(have) if have else 'none'}. Pass the path of a "
            "model folder, a .safetensors or a TokenUnify .pth file instead, or train one "
            "(tokenunify finetune)."
        )
    return path


def portable_source(path: str | Path | None) -> str | None:
    """How a card records where a model came from: a bundled model by its name (which
    ``load_model`` accepts on any machine), anything else by its path as given."""
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        rel = p.resolve().relative_to(BUNDLED_DIR)
    except (OSError, ValueError):
        return str(path)
    return rel.parts[0] if rel.parts else str(path)
