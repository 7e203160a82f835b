"""What every ekc command shares: failures as one line and an exit code, the common options, the spec
with its secrets, and the default places (build/, the bundle, known_hosts).

Exit codes: 0 ok (or nothing to do), 1 changes pending or a host failed, 2 bad usage or a bad spec.
A user's mistake never shows a traceback; ``--debug`` shows one for ekc's own defects.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ekc.spec.diagnostics import SpecErrors
from ekc.spec.load import LoadedSpec, load_spec, message_path
from ekc.spec.vault import VaultError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2
BUILD_ROOT = Path("build")


class Fail(Exception):
    """A clear, one-line failure with a chosen exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def guarded(func: F) -> F:
    """Turn every known failure into its message and exit code; a traceback only with --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Fail as exc:
            _exit(str(exc), exc.code)
        except SpecErrors as exc:
            for error in exc.errors:
                click.echo(str(error), err=True)
            noun = "error" if len(exc.errors) == 1 else "errors"
            _exit(f"{len(exc.errors)} {noun}; nothing was changed", EXIT_USAGE)
        except VaultError as exc:
            _exit(str(exc), EXIT_USAGE)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            if isinstance(exc, _operational_errors()):
                _exit(str(exc), 1)
            _exit(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)", 1)

    return wrapper  # type: ignore[return-value]


def _operational_errors() -> tuple[type[Exception], ...]:
    """Failures of the world, not of ekc or the spec: a tool, a host, a bundle. Their message says it all."""
    from ekc.bundle.lock import BundleError  # noqa: PLC0415
    from ekc.bundle.rootfs import RootfsError  # noqa: PLC0415
    from ekc.bundle.serve import PublishError  # noqa: PLC0415
    from ekc.crypto.bundlekey import GpgError  # noqa: PLC0415
    from ekc.engines.common import EngineError  # noqa: PLC0415
    from ekc.engines.ssh import LiveError  # noqa: PLC0415
    from ekc.lab.model import LabError  # noqa: PLC0415
    from ekc.render.build import BuildDirError  # noqa: PLC0415
    from ekc.render.report import ReportError  # noqa: PLC0415

    return (BuildDirError, BundleError, EngineError, GpgError, LabError, LiveError, PublishError, ReportError,
            RootfsError)


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"ekc: {message}", err=True)
    sys.exit(code)


vault_option = click.option(
    "--vault-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File with the vault password (else $EKC_VAULT_PASSWORD, $EKC_VAULT_PASSWORD_FILE, "
    "inventories/<region>/.vault_pass).",
)


def load_with_secrets(spec_arg: str, vault_file: Path | None) -> tuple[LoadedSpec, Any]:
    """The validated spec and a view of its checked secrets."""
    from ekc.spec.secrets import load_secrets  # noqa: PLC0415 - keeps `--help` fast
    from ekc.spec.vault import resolve_vault_password  # noqa: PLC0415

    spec = load_spec(spec_arg)
    password = resolve_vault_password(vault_file, spec.region_dir)
    shown_dir = message_path(spec.region_dir)
    return spec, load_secrets(spec.region, spec.region_dir, shown_dir, password)


def default_build_dir(loaded: LoadedSpec) -> Path:
    """``build/<region>`` for a spec at ``inventories/<region>/region.yml``."""
    return BUILD_ROOT / loaded.name


limit_option = click.option("--limit", multiple=True, metavar="HOST", help="Only this host (repeatable).")
known_hosts_option = click.option(
    "--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
    help="SSH known_hosts file: new hosts are accepted, changed keys refused (default: the lab's own file "
    "while the region's lab is up, else inventories/<region>/known_hosts).",
)


def default_known_hosts(loaded: LoadedSpec, secrets: Any, given: Path | None) -> Path:
    """Pin host keys per region: the lab's file for lab nodes (they get new keys each time the lab is made),
    else ``known_hosts`` beside the spec, which a ministry keeps with its inventory."""
    from ekc.lab.region import lab_for  # noqa: PLC0415

    if given is not None:
        return given
    lab_ = lab_for(loaded, secrets)
    return lab_.known_hosts if lab_.state_path.is_dir() else loaded.region_dir / "known_hosts"


def verified_bundle(loaded: LoadedSpec, bundle_dir: Path | None) -> Path:
    """The region's bundle (default bundles/<region>), refused unless it verifies against the region's key."""
    from ekc.bundle.check import verify_bundle  # noqa: PLC0415
    from ekc.bundle.region import trusted_key  # noqa: PLC0415

    bundle_dir = bundle_dir or Path("bundles") / loaded.name
    if not bundle_dir.is_dir():
        raise Fail(f"no bundle at {bundle_dir}: run ./deploy.py bundle build on the connected side")
    problems = verify_bundle(bundle_dir, trusted_key(bundle_dir, None, loaded.region_dir))
    if problems:
        raise Fail(f"{bundle_dir} is refused, it does not verify:\n  " + "\n  ".join(problems), 1)
    return bundle_dir
