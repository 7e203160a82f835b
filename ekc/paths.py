"""Where the checkout's own folders are: ekc runs from a clone, the way kubespray or kolla-ansible do."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"
ROLES_DIR = REPO_ROOT / "roles"
INVENTORIES_DIR = REPO_ROOT / "inventories"
