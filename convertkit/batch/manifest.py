"""The batch manifest: a YAML file of models and targets, validated up front into frozen
job specs. Every problem names its line; all of them are reported at once.

    version: 1                      # optional
    defaults:                       # every model key but name/source; models override them
      targets: [cpu]
      timeout_s: 600
      memory_mb: 8192
    resources:                      # Ray: custom resources a job asks for, per target
      npu:rknn: {rknn: 1}
    models:
      - source: examples/tiny_cnn.py:build      # the only required key
        name: tiny_cnn                          # default: from source
        inputs: [x:batchx3x32x32]
      - source: models/mnist.onnx
        targets: [cpu, cpu:openvino]

Relative paths (source, data, weights) are relative to the manifest's folder, which is
also the folder each job runs in (so ``package.module:NAME`` imports from there).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convertkit.dependencies import require
from convertkit.errors import ConvertkitError, UsageError, did_you_mean
from convertkit.options import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    ConvertOptions,
    option_field,
    option_fields,
)
from convertkit.registry import resolve_target
from convertkit.spec import SourceRef, TargetSpec

MANIFEST_VERSION = 1

# Keys a model entry and the defaults may hold: every option of `convert` (by its
# ConvertOptions field name) and the job's limits, which take the place of convert's own
# --timeout and --memory-mb (Flag.job_limit).
_LIMIT_KEYS = ("timeout_s", "memory_mb", "threads")
_OPTION_KEYS = (*(spec.name for spec in option_fields() if not spec.flag.job_limit),
                *_LIMIT_KEYS)
_MODEL_KEYS = ("name", "source", *_OPTION_KEYS)
_TOP_KEYS = ("version", "defaults", "resources", "models")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ManifestError(UsageError):
    """The manifest cannot be read or is invalid; ``problems`` lists every one, each
    starting with FILE:LINE."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.problems = [f"{path}:{line}: {text}" for line, text in sorted(problems)]
        count = len(self.problems)
        message = (self.problems[0] if count == 1 else
                   f"{path} has {count} problems:\n  " + "\n  ".join(self.problems))
        super().__init__(message, hint="fix the manifest (format: README, `## Batch jobs`)",
                         code="bad-manifest")


@dataclass(frozen=True)
class ConversionSpec:
    """What decides a job's result: hashed (with the files it names) into its cache key."""

    source: str  # as written in the manifest
    # Paths in it are relative to the manifest's folder, where the job runs.
    options: ConvertOptions = field(default_factory=ConvertOptions)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "options": self.options.to_dict()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ConversionSpec:
        return ConversionSpec(data["source"], ConvertOptions.from_dict(data["options"]))


@dataclass(frozen=True)
class JobLimits:
    """How a job runs, not what it computes: not part of the cache key."""

    timeout_s: float = DEFAULT_TIMEOUT_S  # wall clock, whole job
    memory_mb: int | None = DEFAULT_MEMORY_MB  # address-space limit of every job process
    threads: int | None = None  # math threads per job; None: cores / parallel jobs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> JobLimits:
        return JobLimits(**data)


@dataclass(frozen=True)
class JobSpec:
    """One model with its target set: one child process, one folder OUT/jobs/NAME."""

    name: str
    line: int  # where the model's entry starts in the manifest
    conversion: ConversionSpec
    limits: JobLimits = field(default_factory=JobLimits)
    # Ray custom resources the job asks for (merged over its targets), sorted by name.
    resources: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "line": self.line, "conversion": self.conversion.to_dict(),
                "limits": self.limits.to_dict(), "resources": [list(r) for r in self.resources]}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> JobSpec:
        return JobSpec(data["name"], data["line"], ConversionSpec.from_dict(data["conversion"]),
                       JobLimits.from_dict(data["limits"]),
                       tuple((name, float(amount)) for name, amount in data["resources"]))


@dataclass(frozen=True)
class Manifest:
    path: Path
    base_dir: Path  # relative paths in the manifest are relative to this; jobs run here
    jobs: tuple[JobSpec, ...]
    resources: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()  # target -> needs


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate ``path``; raise ManifestError (a UsageError) listing every
    problem with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read manifest {path}: {exc.strerror}",
                         hint="pass an existing manifest file", code="file-not-found") from exc
    return parse_manifest(text, path)


def parse_manifest(text: str, path: Path) -> Manifest:
    yaml = require("yaml", name="PyYAML", extra="batch", needed_for="needed to read manifests")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ManifestError(path, [(line, f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError(path, [(1, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return _Reader(path, loader).manifest(root)


class _Reader:
    """Walks the YAML node tree (nodes carry their line) and collects every problem."""

    def __init__(self, path: Path, loader) -> None:
        self.path = path
        self.loader = loader
        self.problems: list[tuple[int, str]] = []

    def problem(self, node, text: str) -> None:
        self.problems.append((node.start_mark.line + 1, text))

    def manifest(self, root) -> Manifest:
        import yaml

        if root is None:
            raise ManifestError(self.path, [(1, "the manifest is empty: it needs `models:`")])
        if not isinstance(root, yaml.MappingNode):
            raise ManifestError(self.path, [(root.start_mark.line + 1,
                                             "the manifest must be a mapping with `models:`")])
        top = self.mapping(root, _TOP_KEYS, "the manifest")
        if "version" in top:
            version = self.value(top["version"])
            if version != MANIFEST_VERSION:
                self.problem(top["version"], f"version {version!r} is not supported "
                             f"(this convertkit reads version {MANIFEST_VERSION})")
        defaults: dict[str, Any] = {}
        if "defaults" in top:
            defaults = self.options(top["defaults"], "defaults", _OPTION_KEYS)
        resources = self.resources(top["resources"]) if "resources" in top else {}
        jobs: list[JobSpec] = []
        if "models" not in top:
            self.problem(root, "the manifest has no `models:` list")
        elif not isinstance(top["models"], yaml.SequenceNode) or not top["models"].value:
            self.problem(top["models"], "`models:` must be a non-empty list of models")
        else:
            seen: dict[str, int] = {}
            for index, node in enumerate(top["models"].value):
                job = self.job(node, index, defaults, resources)
                if job is None:
                    continue
                if job.name in seen:
                    self.problem(node, f"models[{index}]: name {job.name!r} is already used on "
                                 f"line {seen[job.name]}; give each model a unique `name:`")
                    continue
                seen[job.name] = job.line
                jobs.append(job)
        if self.problems:
            raise ManifestError(self.path, self.problems)
        resolved = self.path.resolve()
        return Manifest(resolved, resolved.parent, tuple(jobs),
                        tuple((t, tuple(sorted(r.items()))) for t, r in resources.items()))

    def job(self, node, index: int, defaults: dict[str, Any],
            resources: dict[str, dict[str, float]]) -> JobSpec | None:
        import yaml

        where = f"models[{index}]"
        if isinstance(node, yaml.ScalarNode):  # a bare SOURCE string
            text = self.text(node, where)
            entry = {} if text is None else {"source": text}
        elif isinstance(node, yaml.MappingNode):
            entry = self.options(node, where, _MODEL_KEYS)
        else:
            self.problem(node, f"{where}: a model is a mapping with `source:` (or a SOURCE string)")
            return None
        if "source" not in entry:
            if isinstance(node, yaml.MappingNode):
                self.problem(node, f"{where}: `source:` is missing")
            return None
        values = {**defaults, **entry}
        name = values.get("name") or _default_name(values["source"])
        if not _NAME.match(name):
            self.problem(node, f"{where}: name {name!r} cannot be a folder name; use letters, "
                         "digits, '_', '.', '-'")
            return None
        options = ConvertOptions(**{key: value for key, value in values.items()
                                    if key not in (*_LIMIT_KEYS, "name", "source")})
        conversion = ConversionSpec(values["source"], options)
        limits = JobLimits(timeout_s=values.get("timeout_s", DEFAULT_TIMEOUT_S),
                           memory_mb=values.get("memory_mb", DEFAULT_MEMORY_MB),
                           threads=values.get("threads"))
        return JobSpec(name, node.start_mark.line + 1, conversion, limits,
                       _job_resources(options.targets, resources))

    # -- mappings and values -------------------------------------------------------------

    def mapping(self, node, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
        """{key: value node} of a mapping node, reporting unknown and repeated keys."""
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{where} must be a mapping")
            return {}
        found: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in allowed:
                close = did_you_mean(str(key), allowed)
                self.problem(key_node, f"{where}: unknown key {key!r}"
                             + (f" ({close.strip()})" if close else ""))
                continue
            if key in found:
                self.problem(key_node, f"{where}: {key!r} is given twice")
                continue
            found[key] = value_node
        return found

    def options(self, node, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """Validated Python values of a model entry or of `defaults`."""
        values: dict[str, Any] = {}
        for key, value_node in self.mapping(node, allowed, where).items():
            value = self.option(key, value_node, f"{where}.{key}")
            if value is not _INVALID:
                values[key] = value
        return values

    def option(self, key: str, node, where: str) -> Any:
        if key in ("name", "source"):
            text = self.text(node, where)
            if text is None:
                return _INVALID
            if key == "source":
                try:
                    SourceRef.parse(text)
                except ConvertkitError as error:
                    self.problem(node, f"{where}: {error.message}")
                    return _INVALID
            return text
        if key in _LIMIT_KEYS:
            return self.limit(key, node, where)
        return self.conversion_option(key, node, where)

    def conversion_option(self, key: str, node, where: str) -> Any:
        """A convert option, parsed as the CLI and the Python API parse it (options.py);
        each item of a list is judged on its own line."""
        import yaml

        spec = option_field(key)
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        valid = True
        for item in items:
            value = self.value(item)
            try:
                parsed = spec.parse([value] if spec.flag.repeatable and item is not node
                                    else value)
                if key == "targets":
                    for target in parsed:
                        resolve_target(target)
            except ConvertkitError as error:
                self.problem(item, f"{where}: {_detail(error)}")
                valid = False
        return spec.parse(self.value(node)) if valid else _INVALID

    def limit(self, key: str, node, where: str) -> Any:
        value = self.value(node)
        if key in ("memory_mb", "threads"):
            if value is None and key == "memory_mb":
                return None  # no memory limit
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.problem(node, f"{where}: must be a whole number >= 1"
                             + (" (or null: no limit)" if key == "memory_mb" else "")
                             + f", not {value!r}")
                return _INVALID
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.problem(node, f"{where}: must be a number > 0 (seconds), not {value!r}")
            return _INVALID
        return float(value)

    def resources(self, node) -> dict[str, dict[str, float]]:
        import yaml

        resources: dict[str, dict[str, float]] = {}
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, "resources: must map a target to {RESOURCE: AMOUNT}")
            return resources
        for key_node, value_node in node.value:
            target = str(self.value(key_node))
            try:
                canonical = str(TargetSpec.parse(target))
            except ConvertkitError as error:
                self.problem(key_node, f"resources: {error.message}")
                continue
            amounts = self.value(value_node)
            if not isinstance(amounts, dict) or not amounts or not all(
                    isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                    and v > 0 for k, v in amounts.items()):
                self.problem(value_node, f"resources.{target}: must be a mapping of resource "
                             "names to positive amounts, e.g. {rknn: 1}")
                continue
            resources[canonical] = {k: float(v) for k, v in amounts.items()}
        return resources

    def text(self, node, where: str) -> str | None:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(node, f"{where}: must be a non-empty string, not {value!r}")
            return None
        return value.strip()

    def value(self, node) -> Any:
        return self.loader.construct_object(node, deep=True)


_INVALID = object()


def _detail(error: ConvertkitError) -> str:
    """An option's problem as one manifest line: the message, and the suggestion where
    the hint makes one."""
    suggests = error.code in ("unknown-target", "unknown-framework", "unknown-option")
    return error.message + (f" ({error.hint.strip()})" if suggests and error.hint else "")


def _default_name(source: str) -> str:
    """`examples/tiny_cnn.py:build` -> `tiny_cnn.build`; `m/mnist.onnx` -> `mnist`."""
    ref = SourceRef.parse(source)
    if ref.module is not None:
        stem = ref.module
    else:
        path = Path(str(ref.path).rstrip("/"))
        stem = path.stem if path.suffix else path.name
    name = f"{stem}.{ref.attribute}" if ref.attribute else stem
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip(".") or "model"


def _job_resources(targets: tuple[TargetSpec, ...],
                   resources: dict[str, dict[str, float]]) -> tuple[tuple[str, float], ...]:
    """The resources a job asks for: for each of its targets, every `resources:` entry
    that names the target or a more general form of it (npu:rknn covers npu:rknn@rk3588);
    the largest amount of each resource wins."""
    needs: dict[str, float] = {}
    for target in targets:
        for key, amounts in resources.items():
            general = TargetSpec.parse(key)
            if general.family == target.family and general.toolchain in (
                    None, target.toolchain) and general.device in (None, target.device):
                for name, amount in amounts.items():
                    needs[name] = max(needs.get(name, 0.0), amount)
    return tuple(sorted(needs.items()))
