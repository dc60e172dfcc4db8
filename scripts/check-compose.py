#!/usr/bin/env python3
"""Check docker-compose.yml against the real `cairn` binary.

    python3 scripts/check-compose.py --cairn ./target/debug/cairn [--file docker-compose.yml]

What it checks, one line per check, then an `N passed, M failed` summary:

* the file parses and has services; no service is Redis (by name or image) and no
  environment value points at redis:// -- Cairn runs on Postgres alone;
* every service built from this repository's Dockerfile as the cairn image (its last
  stage, the default target) or using a `cairn` image runs a real `cairn` subcommand
  (as listed by `cairn --help`), with only flags that `cairn <subcommand> --help`
  lists, and keeps the image's `cairn` entrypoint;
* a service built from another stage of the Dockerfile (the dashboard's nginx) names a
  stage that exists, and every `http://HOST:PORT` in the nginx configuration that stage
  copies in names a service, and the port a `cairn api` service listens on;
* every environment variable set on such a service is one that
  `cairn <subcommand> --help` names in an `[env: NAME=]` note, or RUST_LOG, or a
  name listed in that service's CAIRN_TEMPLATE_ENV (the worker passes those to
  templates as `env.NAME`); boolean flags set through the environment get exactly
  `true` or `false` (clap rejects `1`/`yes`);
* `depends_on` names existing services; a `service_healthy` dependency has a health
  check; a service started with CAIRN_NO_MIGRATE=true waits for a `cairn migrate`
  service to complete successfully;
* services without an HTTP listener (worker, migrate) disable the image's HTTP
  health check, and workers set no container_name and publish no ports, so that
  `docker compose up --scale worker=N` works.

Values written as ${NAME:-default} are checked with their default. Needs Python 3.11+
and PyYAML. Exit status: 0 when every check passed, 1 when one failed, 2 when the
checks could not run (no PyYAML, no binary, unreadable file).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "check-compose: PyYAML is required (python3 -m pip install pyyaml, "
        "or apt-get install python3-yaml)\n"
    )
    sys.exit(2)

REPO = Path(__file__).resolve().parent.parent
ALWAYS_ALLOWED_ENV = {"RUST_LOG"}
# Subcommands that serve HTTP (and so can answer the image's /healthz probe).
HTTP_SUBCOMMANDS = {"api", "dev"}


class SetupError(Exception):
    """The checks cannot run at all."""


# --------------------------------------------------------------------------- help


@dataclass
class Option:
    long: str
    takes_value: bool
    env: str | None


@dataclass
class Subcommand:
    name: str
    options: dict[str, Option] = field(default_factory=dict)  # by long name

    @property
    def env(self) -> dict[str, Option]:
        return {o.env: o for o in self.options.values() if o.env}


def run_help(binary: str, *args: str) -> str:
    # A minimal environment, so `[env: NAME=value]` notes never show local values.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
    try:
        proc = subprocess.run(
            [binary, *args, "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run {' '.join([binary, *args, '--help'])}: {exc}") from exc
    if proc.returncode != 0:
        raise SetupError(
            f"{' '.join([binary, *args, '--help'])} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def parse_subcommands(top_help: str) -> list[str]:
    names: list[str] = []
    in_commands = False
    for line in top_help.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
            continue
        if in_commands:
            if not line.strip() or not line.startswith(" "):
                break
            name = line.split()[0]
            if name != "help":
                names.append(name)
    return names


ENV_NOTE = re.compile(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)(?:=[^\]]*)?\]")


def parse_options(help_text: str) -> dict[str, Option]:
    """Options from clap's help, in both its one-line and its two-line layout."""
    blocks: list[list[str]] = []
    in_options = False
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped == "Options:":
            in_options = True
            continue
        if not in_options:
            continue
        if line and not line.startswith(" "):  # next section
            in_options = False
            continue
        if stripped.startswith("-"):
            blocks.append([stripped])
        elif stripped and blocks:
            blocks[-1].append(stripped)
    options: dict[str, Option] = {}
    for block in blocks:
        header = re.split(r"\s{2,}", block[0], maxsplit=1)[0]
        long = re.search(r"--([A-Za-z0-9][A-Za-z0-9-]*)", header)
        if not long:
            continue
        env = ENV_NOTE.search(" ".join(block))
        options[long.group(1)] = Option(
            long=long.group(1),
            takes_value="<" in header,
            env=env.group(1) if env else None,
        )
    return options


def load_cli(binary: str) -> dict[str, Subcommand]:
    top = run_help(binary)
    names = parse_subcommands(top)
    if not names:
        raise SetupError(f"{binary} --help lists no subcommands")
    global_options = parse_options(top)
    cli: dict[str, Subcommand] = {}
    for name in names:
        sub = Subcommand(name, dict(global_options))
        sub.options.update(parse_options(run_help(binary, name)))
        cli[name] = sub
    return cli


# ------------------------------------------------------------------------ compose

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def with_defaults(value: object) -> str | None:
    """A compose value with ${NAME:-default} replaced by its default; None if unknown."""
    if value is None:
        return None
    text = str(value)
    unknown = False

    def repl(m: re.Match[str]) -> str:
        nonlocal unknown
        op, default = m.group(2), m.group(3)
        if op in (":-", "-"):
            return default or ""
        unknown = True
        return ""

    text = INTERPOLATION.sub(repl, text.replace("$$", "\0")).replace("\0", "$")
    return None if unknown else text


def as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def environment(service: dict, compose_dir: Path) -> tuple[dict[str, object], list[str]]:
    """The service's environment (name -> raw value) and any problems reading it."""
    env: dict[str, object] = {}
    problems: list[str] = []
    env_files = service.get("env_file") or []
    if isinstance(env_files, (str, dict)):
        env_files = [env_files]
    for entry in env_files:
        path = entry["path"] if isinstance(entry, dict) else entry
        required = entry.get("required", True) if isinstance(entry, dict) else True
        file = compose_dir / path
        if not file.is_file():
            if required:
                problems.append(f"env_file {path} does not exist, so it cannot be checked")
            continue
        for line in file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.removeprefix("export ").partition("=")
                env[name.strip()] = value
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        env.update(raw)
    else:
        for item in raw:
            name, sep, value = str(item).partition("=")
            env[name] = value if sep else None
    return env, problems


def depends_on(service: dict) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def image_name(image: object) -> str:
    ref = with_defaults(image) or ""
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


@dataclass
class Stage:
    name: str
    copies: list[str]  # sources of COPY lines that take files from the build context


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order (unnamed ones get their index as name)."""
    stages: list[Stage] = []
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            named = len(words) >= 4 and words[2].upper() == "AS"
            stages.append(Stage(words[3] if named else str(len(stages)), []))
        elif words[0].upper() == "COPY" and stages:
            args = [w for w in words[1:] if not w.startswith("--")]
            if not any(w.startswith("--from") for w in words[1:]) and len(args) >= 2:
                stages[-1].copies += args[:-1]
    return stages


def repo_build(service: dict, compose_dir: Path) -> tuple[Path, str | None] | None:
    """(Dockerfile, target) when the service is built from this repository."""
    build = service.get("build")
    if build is None:
        return None
    spec = {"context": build} if isinstance(build, str) else build
    context = (compose_dir / str(spec.get("context", "."))).resolve()
    if context != REPO:
        return None
    return context / str(spec.get("dockerfile", "Dockerfile")), spec.get("target")


def uses_cairn_image(service: dict, compose_dir: Path) -> bool:
    built = repo_build(service, compose_dir)
    if built is not None:
        dockerfile, target = built
        if target is None:
            return True
        stages = dockerfile_stages(dockerfile) if dockerfile.is_file() else []
        return bool(stages) and target == stages[-1].name
    return "image" in service and image_name(service["image"]) == "cairn"


def listen_port(service: dict, compose_dir: Path) -> int:
    """The port a `cairn api`/`cairn dev` service listens on (--listen, CAIRN_LISTEN, 8080)."""
    command = as_list(service.get("command"))
    listen = None
    for i, arg in enumerate(command):
        if arg == "--listen" and i + 1 < len(command):
            listen = command[i + 1]
        elif arg.startswith("--listen="):
            listen = arg.split("=", 1)[1]
    if listen is None:
        env, _ = environment(service, compose_dir)
        listen = with_defaults(env.get("CAIRN_LISTEN")) or "127.0.0.1:8080"
    return int(listen.rsplit(":", 1)[-1])


def healthcheck_disabled(service: dict) -> bool:
    hc = service.get("healthcheck")
    if not hc:
        return False
    test = hc.get("test")
    return bool(hc.get("disable")) or test == ["NONE"] or test == "NONE"


# ------------------------------------------------------------------------- checks


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}" + (f": {why}" if why else ""))
        return ok


def check_compose(compose: dict, compose_dir: Path, cli: dict[str, Subcommand], r: Report) -> None:
    services = compose.get("services") if isinstance(compose, dict) else None
    if not r.check(isinstance(services, dict) and bool(services), "file has services"):
        return

    # No Redis anywhere.
    redis = [
        name
        for name, svc in services.items()
        if "redis" in name.lower() or "redis" in str((svc or {}).get("image", "")).lower()
    ]
    r.check(not redis, "no redis service or image", f"found {', '.join(redis)}")
    redis_urls = []
    for name, svc in services.items():
        env, _ = environment(svc or {}, compose_dir)
        redis_urls += [f"{name}.{k}" for k, v in env.items() if "redis://" in str(v) or "rediss://" in str(v)]
    r.check(not redis_urls, "no environment value points at redis://", ", ".join(redis_urls))

    # Which service runs which subcommand.
    subcommand_of: dict[str, str] = {}
    for name, svc in services.items():
        svc = svc or {}
        if not uses_cairn_image(svc, compose_dir):
            continue
        entrypoint = as_list(svc.get("entrypoint"))
        r.check(
            not entrypoint or Path(entrypoint[0]).name == "cairn",
            f"{name}: runs the cairn entrypoint",
            f"entrypoint is {entrypoint}",
        )
        command = as_list(svc.get("command"))
        if entrypoint and Path(entrypoint[0]).name == "cairn":
            command = entrypoint[1:] + command
        args = [a for a in command if not a.startswith("-")]
        sub = args[0] if args else None
        if not r.check(
            sub in cli,
            f"{name}: runs a real cairn subcommand ({sub})",
            f"`cairn --help` lists {', '.join(cli)}; the image's default command is not "
            "checked, so set `command:`",
        ):
            continue
        subcommand_of[name] = sub
        known = cli[sub].options
        for arg in command:
            if arg.startswith("--"):
                flag = arg[2:].split("=", 1)[0]
                r.check(flag in known, f"{name}: `cairn {sub}` takes --{flag}")

        env, problems = environment(svc, compose_dir)
        for problem in problems:
            r.check(False, f"{name}: environment readable", problem)
        accepted = cli[sub].env
        template_env: set[str] = set()
        if "CAIRN_TEMPLATE_ENV" in accepted and env.get("CAIRN_TEMPLATE_ENV") is not None:
            listed = with_defaults(env["CAIRN_TEMPLATE_ENV"]) or ""
            template_env = {n.strip() for n in listed.split(",") if n.strip()}
        for var, value in env.items():
            if var in accepted:
                r.check(True, f"{name}: {var} is read by `cairn {sub}`")
                option = accepted[var]
                resolved = with_defaults(value)
                if not option.takes_value and resolved is not None:
                    r.check(
                        resolved in ("true", "false"),
                        f"{name}: {var} is true or false",
                        f"got {resolved!r}; clap accepts only `true` or `false` here",
                    )
            elif var in ALWAYS_ALLOWED_ENV:
                r.check(True, f"{name}: {var} is read (tracing's filter)")
            elif var in template_env:
                r.check(True, f"{name}: {var} is listed in CAIRN_TEMPLATE_ENV")
            else:
                r.check(
                    False,
                    f"{name}: {var} is read by `cairn {sub}`",
                    f"`cairn {sub} --help` reads only {', '.join(sorted(accepted))} (plus RUST_LOG)",
                )

        if sub not in HTTP_SUBCOMMANDS:
            r.check(
                healthcheck_disabled(svc),
                f"{name}: disables the image's HTTP health check (`cairn {sub}` serves no HTTP)",
            )
        if sub == "worker":
            r.check("container_name" not in svc, f"{name}: no container_name (scalable)")
            r.check(not svc.get("ports"), f"{name}: publishes no ports (scalable)")

    # Services built from other stages of the Dockerfile: the dashboard's web server.
    for name, svc in services.items():
        svc = svc or {}
        built = repo_build(svc, compose_dir)
        if built is None or uses_cairn_image(svc, compose_dir):
            continue
        dockerfile, target = built
        stages = {s.name: s for s in (dockerfile_stages(dockerfile) if dockerfile.is_file() else [])}
        if not r.check(target in stages, f"{name}: builds stage {target} of {dockerfile.name}", f"stages: {', '.join(stages)}"):
            continue
        configs = [REPO / src for src in stages[target].copies if src.endswith(".conf") and (REPO / src).is_file()]
        for conf in configs:
            for host, port in sorted(set(re.findall(r"http://([A-Za-z0-9_.-]+):(\d+)", conf.read_text()))):
                where = f"{name}: {conf.relative_to(REPO)} proxies to {host}:{port}"
                if not r.check(host in services, f"{where}, a service", f"services: {', '.join(services)}"):
                    continue
                if subcommand_of.get(host) in HTTP_SUBCOMMANDS:
                    actual = listen_port(services[host] or {}, compose_dir)
                    r.check(actual == int(port), f"{where}, where `cairn {subcommand_of[host]}` listens", f"it listens on {actual}")

    # Dependencies.
    for name, svc in services.items():
        deps = depends_on(svc or {})
        for dep, condition in deps.items():
            if not r.check(dep in services, f"{name}: depends on existing service {dep}"):
                continue
            target = services[dep] or {}
            if condition == "service_healthy":
                has_check = (
                    bool((target.get("healthcheck") or {}).get("test")) and not healthcheck_disabled(target)
                ) or (subcommand_of.get(dep) in HTTP_SUBCOMMANDS and not healthcheck_disabled(target))
                r.check(has_check, f"{name}: {dep} has a health check to wait for")
        env, _ = environment(svc or {}, compose_dir)
        if name in subcommand_of and with_defaults(env.get("CAIRN_NO_MIGRATE")) == "true":
            migrators = [d for d, c in deps.items() if subcommand_of.get(d) == "migrate" and c == "service_completed_successfully"]
            r.check(
                bool(migrators),
                f"{name}: CAIRN_NO_MIGRATE=true and waits for `cairn migrate` to complete",
                "add depends_on: <migrate service>: condition: service_completed_successfully",
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cairn", default="cairn", metavar="BIN", help="the cairn binary to ask (default: cairn on PATH)")
    parser.add_argument("--file", default=str(REPO / "docker-compose.yml"), help="compose file (default: the repository's)")
    args = parser.parse_args()

    binary = args.cairn if os.sep in args.cairn else (shutil.which(args.cairn) or args.cairn)
    compose_path = Path(args.file)
    try:
        cli = load_cli(binary)
        try:
            compose = yaml.safe_load(compose_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SetupError(f"cannot read {compose_path}: {exc}") from exc
    except SetupError as exc:
        print(f"check-compose: {exc}", file=sys.stderr)
        return 2

    print(f"# {compose_path} against {binary} (subcommands: {', '.join(cli)})")
    report = Report()
    check_compose(compose, compose_path.resolve().parent, cli, report)
    print(f"{report.passed} passed, {report.failed} failed")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
