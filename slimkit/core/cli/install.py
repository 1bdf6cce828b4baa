"""``slimkit install`` / ``slimkit uninstall``: pip, into the environment slimkit runs in."""

from __future__ import annotations

import subprocess
import sys

import click


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise click.ClickException(f"pip exited with status {result.returncode}")


@click.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-e", "--editable", is_flag=True, help="Install a local project in editable mode.")
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade to the newest version.")
@click.option("--force-reinstall", is_flag=True, help="Reinstall even if already installed.")
@click.option("--no-deps", is_flag=True, help="Do not install dependencies.")
@click.option("--no-build-isolation", is_flag=True, help="Build local projects with the installed build tools.")
def install(packages: tuple[str, ...], editable: bool, upgrade: bool, force_reinstall: bool, no_deps: bool,
            no_build_isolation: bool) -> None:
    """Install plugin PACKAGES into slimkit's own environment."""
    args = ["install"]
    if upgrade:
        args.append("--upgrade")
    if force_reinstall:
        args.append("--force-reinstall")
    if no_deps:
        args.append("--no-deps")
    if no_build_isolation:
        args.append("--no-build-isolation")
    for package in packages:
        args.extend(["-e", package] if editable else [package])
    _pip(*args)


@click.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugin PACKAGES from slimkit's environment."""
    _pip("uninstall", *(["-y"] if yes else []), *packages)


COMMANDS = (install, uninstall)
