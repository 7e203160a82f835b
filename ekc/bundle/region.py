"""The bundle as the CLI uses it: what a region needs, built with the region's key, checked with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ekc.bundle.build import BundleResult, build_bundle
from ekc.bundle.lock import BundleError
from ekc.crypto.bundlekey import GpgKey
from ekc.render.region import render_region
from ekc.spec.load import INVENTORIES, LoadedSpec
from ekc.spec.secrets import SecretsView

LOCK_NAME = "bundle.lock"
PUBLIC_KEY_NAME = "bundle-signing-key.asc"


def region_key(secrets: SecretsView) -> GpgKey:
    """The region's bundle signing key from the vault."""
    return GpgKey(
        private_armored=secrets.get("bundle", "signing_key", "private"),
        public_armored=secrets.get("bundle", "signing_key", "public"),
        fingerprint=secrets.get("bundle", "signing_key", "fingerprint"),
    )


def build_region_bundle(loaded: LoadedSpec, secrets: SecretsView, out: Path, *, relock: bool) -> BundleResult:
    """Build the region's bundle into ``out``, replacing an older one only once the new one is complete."""
    lock = loaded.region_dir / LOCK_NAME
    if relock and lock.exists():
        lock.unlink()
    staging = out.with_name(out.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = render_region(loaded, secrets).manifest
    result = build_bundle(manifest.packages(), manifest.python_requirements(), staging, region_key(secrets),
                          lock=lock, region=loaded.name)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return BundleResult(**{**result.__dict__, "out": out})


def write_public_key(region_dir: Path, secrets: SecretsView) -> Path:
    """Export the public half of the bundle key beside the spec (public: it may be committed)."""
    path = region_dir / PUBLIC_KEY_NAME
    text = secrets.get("bundle", "signing_key", "public")
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def trusted_key(bundle_dir: Path, explicit: Path | None, region_dir: Path | None = None) -> str:
    """The key a bundle must be signed with: given, or the one kept with its region (never the bundle's own)."""
    if explicit is not None:
        return explicit.read_text(encoding="utf-8")
    if region_dir is not None:
        path = region_dir / PUBLIC_KEY_NAME
        if not path.exists():
            raise BundleError(f"no trusted bundle key at {path}: run ./deploy.py secrets init, or pass --key")
        return path.read_text(encoding="utf-8")
    try:
        sbom = json.loads((bundle_dir / "sbom.cdx.json").read_text(encoding="utf-8"))
        region = str(sbom["metadata"]["component"]["name"]).removeprefix("ekc-bundle-")
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"{bundle_dir}: no readable sbom.cdx.json to tell its region; pass --key") from None
    path = INVENTORIES / region / PUBLIC_KEY_NAME
    if not path.exists():
        raise BundleError(f"no trusted key for region '{region}' at {path}; pass --key")
    return path.read_text(encoding="utf-8")
