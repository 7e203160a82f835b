"""``deploy.py plan | apply | verify``: the live hosts against the render."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ekc.cli.base import (
    EXIT_CHANGES,
    EXIT_OK,
    EXIT_USAGE,
    Fail,
    default_build_dir,
    default_known_hosts,
    guarded,
    known_hosts_option,
    limit_option,
    load_with_secrets,
    vault_option,
    verified_bundle,
)

if TYPE_CHECKING:
    from ekc.engines.common import ApplyResult
    from ekc.engines.fastpath import FastPathDecision
    from ekc.engines.record import Stopwatch
    from ekc.engines.ssh import SshAccess
    from ekc.render.lifecycle import Departure
    from ekc.render.model import RenderResult
    from ekc.render.plan import Plan
    from ekc.spec.load import LoadedSpec

MAX_REASONS = 8  # refusals of the fast path shown; the record has them all


@click.command()
@click.argument("spec")
@click.option("--against", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Compare with an older build directory instead of the live hosts.")
@limit_option
@known_hosts_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@vault_option
@guarded
def plan(spec: str, against: Path | None, limit: tuple[str, ...], known_hosts: Path | None, as_json: bool,
         vault_password_file: Path | None) -> None:
    """Show what apply would change per host, and the impact of each change. Exit 1 when something would.

    Without --against the hosts are read over SSH: checksums of managed files, package versions, services, and
    the calls in progress on Asterisk nodes that are drained or marked absent. Departments that move are found
    by comparing with the placement of the previous build (build/<region>, or the --against build).
    """
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.lifecycle import lifecycle_plan, ssh_runner  # noqa: PLC0415
    from ekc.engines.live import plan_hosts  # noqa: PLC0415
    from ekc.engines.ssh import LiveError, SshAccess  # noqa: PLC0415
    from ekc.render.components.asterisk_pool import load_placements  # noqa: PLC0415
    from ekc.render.lifecycle import departures  # noqa: PLC0415
    from ekc.render.manifest import load_manifest  # noqa: PLC0415
    from ekc.render.plan import diff_builds  # noqa: PLC0415
    from ekc.render.plan_text import format_plan, plan_to_json  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    rendered = render_region(loaded, secrets)
    departing = [d for d in departures(loaded, secrets) if not limit or d.name in limit]
    if against is not None:
        try:
            old = load_manifest(against)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Fail(f"{against} is not an ekc build directory ({exc})") from None
        result = lifecycle_plan(diff_builds(old, rendered.manifest), loaded.region, rendered.placements,
                                load_placements(against), departing, None)
    else:
        with deploy_key(secrets) as key:
            access = SshAccess(key, default_known_hosts(loaded, secrets, known_hosts))
            try:
                result = lifecycle_plan(plan_hosts(rendered.manifest, access, limit or None), loaded.region,
                                        rendered.placements, load_placements(default_build_dir(loaded)), departing,
                                        ssh_runner(access))
            except LiveError as exc:
                raise Fail(str(exc), 1) from None
    click.echo(plan_to_json(result) if as_json else format_plan(result, color=sys.stdout.isatty()))
    sys.exit(EXIT_CHANGES if result.changed else EXIT_OK)


@click.command()
@click.argument("spec")
@click.option("--engine", type=click.Choice(["pyinfra", "ansible"]), default="pyinfra", show_default=True,
              help="The engine for changes the fast path does not take.")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The bundle to serve to the nodes (default: bundles/<region>).")
@limit_option
@known_hosts_option
@click.option("--dry-run", is_flag=True, help="Say what would change, and how; change nothing.")
@click.option("--no-fast-path", is_flag=True,
              help="Apply with the engine even when only files with reload triggers change.")
@click.option("--record-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the apply record goes (default: build/<region>/applies).")
@click.option("--allow-data-loss", is_flag=True,
              help="Remove nodes marked absent that hold data (a database node, an Asterisk node's recordings).")
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@vault_option
@guarded
def apply(spec: str, engine: str, bundle_dir: Path | None, limit: tuple[str, ...], known_hosts: Path | None,
          dry_run: bool, no_fast_path: bool, record_dir: Path | None, allow_data_loss: bool, yes: bool,
          vault_password_file: Path | None) -> None:
    """Converge the hosts to the render. The live plan is read first: when it changes only managed files whose
    triggers are reloads, the fast path writes them (atomically, one SSH connection per host) and runs those
    reloads; anything else goes to the engine: the bundle as the only package source, then packages, files,
    each changed file's reload or restart, and services. Every apply writes a record (which way it went, what
    changed, the time taken). Exit 1 if a host failed.

    Nodes leaving service: a database node that is drained or marked absent and leads the cluster hands the
    leader over first (patronictl switchover); after the rest, the services of nodes marked absent are stopped
    and disabled. Nodes marked absent that hold data are refused (exit 2, nothing changed) without
    --allow-data-loss."""
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.live import select_hosts  # noqa: PLC0415
    from ekc.engines.record import RECORDS_DIR, Stopwatch  # noqa: PLC0415
    from ekc.engines.ssh import SshAccess, shared_connections  # noqa: PLC0415
    from ekc.render.lifecycle import data_loss_refusal, departures  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415

    clock, started_at = Stopwatch(), dt.datetime.now(dt.UTC)
    loaded, secrets = load_with_secrets(spec, vault_password_file)
    clock.lap("load")
    rendered = render_region(loaded, secrets)
    departing = tuple(d for d in departures(loaded, secrets) if not limit or d.name in limit)
    refusal = data_loss_refusal(departing)
    if refusal and not allow_data_loss:
        raise Fail(refusal, EXIT_USAGE)
    clock.lap("render")
    run = _ApplyRun(loaded, rendered, engine, bundle_dir, limit, default_known_hosts(loaded, secrets, known_hosts),
                    clock, started_at, record_dir or default_build_dir(loaded) / RECORDS_DIR, dry_run, departing)
    addresses = [h.address for h in select_hosts(rendered.manifest, limit).hosts]
    with deploy_key(secrets) as key, shared_connections(SshAccess(key, run.known_hosts), addresses) as access:
        run.read_plan(access, required=not yes)
        run.decide(allowed=not no_fast_path)
        if dry_run or not yes:
            run.show_plan()
        run.show_way()
        engine_forced = no_fast_path and (yes or dry_run)  # the engine runs even when the plan is empty
        if run.plan is not None and not run.plan.changed and not engine_forced:
            click.echo("nothing to change")
            run.finish(None)
        if not (dry_run or yes) and not click.confirm("Apply these changes?", default=False):
            raise Fail("not applied", 1)
        result = run.apply(key, access)
    run.finish(result)


def _no_decision() -> FastPathDecision:
    """No fast-path work and no refusal: the decision before the plan is read."""
    from ekc.engines.fastpath import FastPathDecision  # noqa: PLC0415

    return FastPathDecision((), ())


@dataclass
class _ApplyRun:
    """One ``deploy.py apply``: the render, the live plan, the way it goes, the result and its record."""

    loaded: LoadedSpec
    rendered: RenderResult
    engine: str
    bundle_dir: Path | None
    limit: tuple[str, ...]
    known_hosts: Path | None
    clock: Stopwatch
    started_at: dt.datetime
    record_dir: Path
    dry_run: bool
    departing: tuple[Departure, ...] = ()
    plan: Plan | None = None
    plan_note: str = "read from the hosts"
    decision: FastPathDecision = field(default_factory=_no_decision)

    def read_plan(self, access: SshAccess, *, required: bool) -> None:
        """The live plan; with ``-y`` a host that cannot be read sends the apply to the engine, as before."""
        from ekc.engines.lifecycle import lifecycle_plan, ssh_runner  # noqa: PLC0415
        from ekc.engines.live import plan_hosts  # noqa: PLC0415
        from ekc.engines.ssh import LiveError  # noqa: PLC0415
        from ekc.render.components.asterisk_pool import load_placements  # noqa: PLC0415

        try:
            self.plan = lifecycle_plan(plan_hosts(self.rendered.manifest, access, self.limit or None),
                                       self.loaded.region, self.rendered.placements,
                                       load_placements(default_build_dir(self.loaded)), self.departing,
                                       ssh_runner(access))
        except LiveError as exc:
            if required:
                raise Fail(str(exc), 1) from None
            self.plan_note = f"not read: {exc}"
        self.clock.lap("plan")

    def decide(self, *, allowed: bool) -> None:
        """Fast path or engine."""
        from ekc.engines.fastpath import FastPathDecision, decide  # noqa: PLC0415

        if self.plan is None:
            self.decision = FastPathDecision((), (f"the live plan could not be read ({self.plan_note})",))
        else:
            self.decision = decide(self.plan, self.rendered.manifest, self.rendered.contents, allowed=allowed)

    def show_plan(self) -> None:
        """The live plan, as ``deploy.py plan`` prints it."""
        from ekc.render.plan_text import format_plan  # noqa: PLC0415

        if self.plan is not None:
            click.echo(format_plan(self.plan, color=sys.stdout.isatty()))

    def show_way(self) -> None:
        """Which way the apply goes, and why the fast path does not take it."""
        if self.decision.taken:
            hosts = ", ".join(p.host for p in self.decision.pushes)
            click.echo(f"fast path: only files with reload triggers change ({hosts}); no engine")
        elif self.plan is None or self.plan.changed:
            reasons = self.decision.refusals
            shown = [f"  {reason}" for reason in reasons[:MAX_REASONS]]
            more = [f"  … and {len(reasons) - MAX_REASONS} more"] if len(reasons) > MAX_REASONS else []
            click.echo("\n".join([f"engine {self.engine}: the fast path does not take this plan:", *shown, *more]))

    def apply(self, key: Path, access: SshAccess) -> ApplyResult:
        """Run the fast path or the engine (in a dry run: say what either would do)."""
        from ekc.engines.fastpath import describe, push  # noqa: PLC0415

        if self.decision.taken and self.dry_run:
            click.echo("\n".join(describe(self.decision)))
            sys.exit(EXIT_OK)
        if not self.dry_run:
            self._hand_over_leader(access)
        result = push(self.decision, access) if self.decision.taken else self._run_engine(key)
        if not self.dry_run and result.ok:
            result = self._stop_departures(result, access)
        self.clock.lap("apply")
        return result

    def _hand_over_leader(self, access: SshAccess) -> None:
        """Before anything else: a database leader that leaves the cluster hands over to a replica that stays."""
        from ekc.engines.lifecycle import hand_over_leader, ssh_runner  # noqa: PLC0415

        done = hand_over_leader(self.loaded.region, ssh_runner(access))
        if done:
            click.echo(done)

    def _stop_departures(self, result: ApplyResult, access: SshAccess) -> ApplyResult:
        """After the rest: the services of the nodes marked absent stopped and disabled, as results of their own."""
        from dataclasses import replace  # noqa: PLC0415

        from ekc.engines.lifecycle import ssh_runner, stop_departures  # noqa: PLC0415

        departing = [h for h in self.plan.hosts if h.departing] if self.plan is not None else []
        return replace(result, hosts=result.hosts + stop_departures(departing, ssh_runner(access)))

    def _run_engine(self, key: Path) -> ApplyResult:
        """The chosen engine over the render written to a private temporary build, the bundle served."""
        import tempfile  # noqa: PLC0415

        from ekc.bundle.serve import serve_bundle  # noqa: PLC0415
        from ekc.render.build import write_build  # noqa: PLC0415

        bundle_dir = verified_bundle(self.loaded, self.bundle_dir)
        net = self.loaded.region.network
        with tempfile.TemporaryDirectory(prefix="ekc-apply-") as tmp:
            build = Path(tmp) / "build"
            write_build(self.rendered, build)
            with serve_bundle(bundle_dir, net.deploy_host, net.bundle_port):
                return _run_engine(self.engine, build, key, self.limit, self.known_hosts, dry_run=self.dry_run)

    def finish(self, result: ApplyResult | None) -> NoReturn:
        """Print the result, write the apply record (not for a dry run), and exit with the result's code."""
        from ekc.engines.record import apply_record, write_record  # noqa: PLC0415

        if result is not None:
            click.echo(format_apply(result))
        if not self.dry_run:
            record = apply_record(self.rendered.manifest, result, plan=self.plan, plan_note=self.plan_note,
                                  refused=self.decision.refusals, limit=self.limit, seconds=self.clock.summary(),
                                  started_at=self.started_at)
            path = write_record(record, self.record_dir)
            steps = ", ".join(f"{step} {seconds:.2f} s" for step, seconds in record.seconds.items())
            click.echo(f"apply record: {path} ({steps})")
        sys.exit(EXIT_OK if result is None or result.ok else EXIT_CHANGES)


def _run_engine(engine: str, build: Path, key: Path, limit: tuple[str, ...], known_hosts: Path | None, *,
                dry_run: bool) -> ApplyResult:
    from ekc.engines.ansible_engine import apply_ansible  # noqa: PLC0415
    from ekc.engines.pyinfra_engine import apply_pyinfra  # noqa: PLC0415

    logging.getLogger("pyinfra").setLevel(logging.ERROR)  # its host-key notices are not the user's business
    run = apply_pyinfra if engine == "pyinfra" else apply_ansible
    return run(build, key, limit=limit, dry_run=dry_run, known_hosts=known_hosts)


def format_apply(result: Any) -> str:
    """Per host: what changed (or would), the triggers run, services that cannot run here; then totals."""
    verb = "would change" if result.dry_run else "changed"
    lines = []
    for host in result.hosts:
        if not host.ok:
            lines.append(f"{host.host}: FAILED: {host.error}")
            continue
        parts = [f"{len(host.files)} files", f"{len(host.packages)} packages", f"{len(host.services)} services"]
        touched = host.files or host.packages or host.services
        lines.append(f"{host.host}: {verb} {', '.join(parts)}" if touched else f"{host.host}: no changes")
        lines += [f"  ran: {command}" for command in host.triggers]
        lines += [f"  not running here (a unit condition skips it): {name}" for name in host.not_running]
    failed = sum(not h.ok for h in result.hosts)
    changed = sum(len(h.files) + len(h.packages) + len(h.services) for h in result.hosts)
    lines.append(f"{result.engine}: {changed} files, packages and services {verb} on {len(result.hosts)} hosts"
                 f"{f', {failed} failed' if failed else ''} in {result.seconds} s")
    return "\n".join(lines)


@click.command()
@click.argument("spec")
@limit_option
@known_hosts_option
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="JUnit XML report (default: build/<region>/verify/junit.xml).")
@vault_option
@guarded
def verify(spec: str, limit: tuple[str, ...], known_hosts: Path | None, junit: Path | None,
           vault_password_file: Path | None) -> None:
    """Prove the hosts match the render: packages, files, services, listening ports, firewall (testinfra)."""
    import tempfile  # noqa: PLC0415

    from ekc.bundle.region import LOCK_NAME  # noqa: PLC0415
    from ekc.engines.common import deploy_key  # noqa: PLC0415
    from ekc.engines.ssh import LiveError  # noqa: PLC0415
    from ekc.render.build import write_build  # noqa: PLC0415
    from ekc.render.region import render_region  # noqa: PLC0415
    from ekc.verify.run import format_verify, run_verify  # noqa: PLC0415

    loaded, secrets = load_with_secrets(spec, vault_password_file)
    junit = junit or default_build_dir(loaded) / "verify" / "junit.xml"
    lock = loaded.region_dir / LOCK_NAME
    with tempfile.TemporaryDirectory(prefix="ekc-verify-") as tmp, deploy_key(secrets) as key:
        write_build(render_region(loaded, secrets), Path(tmp) / "build")
        try:
            result = run_verify(Path(tmp) / "build", key, limit=limit or None, junit=junit,
                                bundle_lock=lock if lock.exists() else None,
                                known_hosts=default_known_hosts(loaded, secrets, known_hosts))
        except LiveError as exc:
            raise Fail(str(exc), 1) from None
    click.echo(format_verify(result))
    sys.exit(result.exit_code)


COMMANDS = (plan, apply, verify)
