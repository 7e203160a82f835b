"""Renders for tests: deterministic placeholder secrets, so golden files never hold a real credential."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from ekc.render.model import RenderResult
from ekc.render.region import render_region
from ekc.spec.load import LoadedSpec, load_spec
from ekc.spec.secretgen import SecretRequirement, fill_secrets
from ekc.spec.secrets import SecretsView, required_secrets


def placeholder_tree(requirements: list[SecretRequirement]) -> dict[str, Any]:
    """Every required secret as a stable, obviously fake placeholder naming its path."""
    tree: dict[str, Any] = {}
    for req in requirements:
        name = ".".join(req.path)
        node = tree
        for part in req.path[:-1]:
            node = node.setdefault(part, {})
        if req.kind in ("ca", "host_cert"):
            value: Any = {"cert": f"<cert {name}>", "key": f"<key {name}>"}
        elif req.kind == "gpg_key":
            value = {"private": f"<private {name}>", "public": f"<public key {name}>", "fingerprint": "0" * 40}
        elif req.kind == "ssh_key":
            value = {"private": f"<private {name}>", "public": f"ssh-ed25519 AAAAplaceholder ekc:{name}"}
        else:
            value = f"<{req.kind} {name}>"
        node[req.path[-1]] = value
    return tree


def placeholder_render(spec: str) -> RenderResult:
    """The render of a spec with placeholder secrets: deterministic across machines and secret rotations."""
    loaded = load_spec(spec)
    return render_region(loaded, SecretsView(placeholder_tree(required_secrets(loaded.region))))


def real_secrets(loaded: LoadedSpec) -> SecretsView:
    """Freshly generated real secrets for a spec (in memory; nothing is written)."""
    tree, _ = fill_secrets({}, required_secrets(loaded.region))
    return SecretsView(tree)


def rendered_module(content: bytes, directory: Path, name: str) -> ModuleType:
    """A rendered script (a Python program without the .py suffix) loaded as module ``name`` from ``directory``."""
    path = directory / f"{name}.py"
    path.write_bytes(content)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
