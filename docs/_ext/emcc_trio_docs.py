"""Reference pages generated from the code, so that the documentation cannot drift from it.

At `builder-inited` this writes Markdown into `docs/_generated/` (git-ignored), which the
reference pages include: every configuration key from the `Config` fields (key, type, default,
description), the argument policy from the data in the policy module, the metrics from the
registry `Metrics` builds, and the ports from their catalog. A file is rewritten only when its
text changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
from prometheus_client.metrics import MetricWrapperBase
from sphinx.application import Sphinx
from sphinx.util.typing import ExtensionMetadata

import emcc_trio.compile.policy as policy  # the one place that names the policy module
from emcc_trio.compile.gate import Gate
from emcc_trio.config import Config
from emcc_trio.errors import InternalError, RequestError, ServiceError, all_errors
from emcc_trio.metrics import Metrics
from emcc_trio.ports.catalog import CATALOG
from emcc_trio.storage.cache import ResultCache

GENERATED = "_generated"
_TYPES: Sequence[tuple[object, str]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (tuple[str, ...], "list of strings"),
    (int | None, "integer or null"),
)


def code(text: str) -> str:
    """`text` as inline code, fit for a table cell."""
    return f"`{text}`".replace("|", "\\|")


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def codes(items: Iterable[str]) -> str:
    return " ".join(code(item) for item in items)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# ---- configuration ------------------------------------------------------------------------


def type_name(field_type: object, key: str) -> str:
    for known, name in _TYPES:
        if field_type == known:
            return name
    raise ValueError(f"config key {key}: no documented name for its type {field_type!r}")


def default_json(value: object) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))


def config_markdown() -> str:
    attrs.resolve_types(Config)
    rows = []
    for field in attrs.fields(Config):
        key = field.metadata["key"]
        doc = field.metadata.get("doc", "")
        if not doc:
            raise ValueError(f"config key {key} has no doc in emcc_trio/config.py")
        rows.append(
            [code(key), type_name(field.type, key), code(default_json(field.default)), cell(doc)]
        )
    return "\n".join(table(["key", "type", "default", "meaning"], rows))


# ---- the argument policy ------------------------------------------------------------------


def refusal(arg: str, checked: policy.Policy) -> str:
    """The reason the service's answer gives for refusing `arg`, asked of the policy itself."""
    try:
        checked.check([arg])
    except RequestError as exc:
        return str(exc).partition(" is not allowed: ")[2]
    raise ValueError(f"{arg} is accepted by the {checked.name} policy")


def policy_markdown() -> str:
    memory_cap_mb = Config().job_memory_max_mb
    standard, seed = policy.make_policy("standard", memory_cap_mb), policy.SEED
    std_flags = {f"-std={s}" for s in (*policy.C_STANDARDS, *policy.CXX_STANDARDS)}
    other = sorted(standard.flags - policy.SEED_FLAGS - policy.F_FLAGS - std_flags)
    out = [
        "### Exact flags",
        "",
        "Accepted exactly as written (`-O2x` is refused).",
        "",
        *table(
            ["flags", "policy"],
            [
                [codes(sorted(policy.SEED_FLAGS)), "both"],
                [codes(f"-std={s}" for s in policy.C_STANDARDS) + " (C)", "standard"],
                [codes(f"-std={s}" for s in policy.CXX_STANDARDS) + " (C++)", "standard"],
                [codes(sorted(policy.F_FLAGS)), "standard"],
                [codes(other), "standard"],
            ],
        ),
        "### Flags that take a path",
        "",
        "As the next argument or after `=`; the path must be relative, inside the job dir, "
        "without `..`, of `A-Za-z0-9._/-` only (`--preload-file` and `--embed-file` also "
        "take `P@/virtual/path`). Both policies.",
        "",
        codes(sorted(policy.PATH_FLAGS)),
        "",
        "### Sanitizers",
        "",
        "The names `-fsanitize=LIST` and `-fno-sanitize=LIST` take (standard policy):",
        "",
        codes(sorted(policy.SANITIZERS)),
        "",
        "### Settings",
        "",
        "`-sNAME=VALUE` (and, in the standard policy, `-s NAME=VALUE`). A bare `-sNAME` means "
        "`=1`, as in emcc, where the last column says so (standard policy only). The values "
        "are described in the service's own words, with the default `jobMemoryMaxMB` "
        f"({memory_cap_mb} MB): the sizes follow the configured cap.",
        "",
        *table(
            ["setting", "value", "policy", "bare `-sNAME`"],
            [
                [
                    code(name),
                    cell(rule.hint),
                    "both" if name in seed.settings else "standard",
                    "yes" if rule.bare else "",
                ]
                for name, rule in sorted(standard.settings.items())
            ],
        ),
        "### Refused settings",
        "",
        "Refused with a reason of their own (every setting not listed above is refused too).",
        "",
        *table(
            ["setting", "the answer says"],
            [
                [code(f"-s{name}"), cell(refusal(f"-s{name}=1", standard))]
                for name in sorted(policy.REFUSED_SETTINGS)
            ],
        ),
        "The emscripten ports, each refused with "
        f"“{refusal('-s' + min(policy.PORTS) + '=1', standard)}”:",
        "",
        codes(f"-s{name}" for name in sorted(policy.PORTS)),
        "",
        "### Refused flags",
        "",
        "Flags refused with a reason of their own by the standard policy:",
        "",
        *table(
            ["flag", "the answer says"],
            [[code(flag), cell(why)] for flag, why in sorted(policy.REFUSED_FLAGS.items())],
        ),
        "Every argument that starts with one of these is refused by both policies, and is a "
        "config error in `extraAllowedArgs`: it can make emcc, clang, the assembler or the "
        "linker read or write a file by path, or run another program. The first that matches "
        "gives the reason the answer gives.",
        "",
        *table(
            ["starts with", "why"],
            [[code(prefix), cell(why)] for prefix, why in policy.PATH_PREFIXES],
        ),
        "### Bounds",
        "",
        f"At most {policy.MAX_ARGS} arguments, each at most {policy.MAX_ARG_LENGTH} "
        "characters, none with a NUL character.",
        "",
    ]
    return "\n".join(out)


# ---- metrics ------------------------------------------------------------------------------


def metrics_markdown() -> str:
    metrics = Metrics()
    # The gauges read these only when scraped: an idle gate and an empty cache list them all.
    gate = Gate(
        estimate_bytes=0, max_concurrent=1, queue_max=1, queue_timeout_seconds=1, budget=None
    )
    metrics.watch_gate(gate)
    metrics.watch_cache(ResultCache(Path("cache"), Path("artifacts"), max_bytes=0))
    # prometheus_client keeps label names private; a labelled metric shows none until used.
    wrappers = [getattr(metrics, field.name) for field in attrs.fields(Metrics)]
    labels = {
        metric._name: metric._labelnames
        for metric in wrappers
        if isinstance(metric, MetricWrapperBase)
    }
    rows = []
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        rows.append(
            [
                code(name),
                family.type,
                codes(labels.get(family.name, ())),
                cell(family.documentation),
            ]
        )
    return "\n".join(table(["metric", "type", "labels", "help"], rows))


# ---- the extension ------------------------------------------------------------------------


def errors_markdown() -> str:
    """Every refusal class (emcc_trio.errors.ServiceError and its subclasses across the
    layers), with its status, whether it carries Retry-After, and its fixed message."""
    import emcc_trio.server  # noqa: F401  (imports every layer: every refusal class exists)

    rows = [
        "| refusal | status | `Retry-After` | `error` | when |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cls in sorted(all_errors(), key=lambda c: (c.status, c.__name__)):
        if cls is ServiceError:
            continue
        fixed = cls.answer is ServiceError.answer
        message = f"`{cls.public}`" if fixed else "what is wrong, in words (the table above)"
        if cls.answer is InternalError.answer:
            message = "`internal error: <what failed>`, with the job's `id`"
        when = " ".join((cls.__doc__ or "").split())
        retry = "yes" if cls.retry else "no"
        rows.append(f"| `{cls.__name__}` | {cls.status} | {retry} | {message} | {when} |")
    return "\n".join(rows) + "\n"


def ports_markdown() -> str:
    """The ports of the catalog: flag, what each is, the release and the Debian package."""
    rows = []
    for port in CATALOG:
        formats = ""
        if port.formats is not None:
            choices = " or ".join(
                code("[" + ",".join(choice) + "]") for choice in port.formats.installed
            )
            default = code("[" + ",".join(port.formats.default) + "]")
            formats = f"{code('-s' + port.formats.setting)}: {choices} (default {default})"
        rows.append(
            (
                code(port.flag),
                cell(port.summary),
                cell(port.release),
                f"{code(port.source.package)} {code(port.source.debian_version)}",
                cell(port.licence),
                formats,
            )
        )
    header = ("flag", "what it is", "release", "Debian package", "licence", "variants")
    return "\n".join(table(header, rows))


PAGES = {
    "config.md": config_markdown,
    "policy.md": policy_markdown,
    "metrics.md": metrics_markdown,
    "errors.md": errors_markdown,
    "ports.md": ports_markdown,
}


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx) -> None:
    folder = Path(app.srcdir) / GENERATED
    folder.mkdir(exist_ok=True)
    header = "<!-- generated by docs/_ext/emcc_trio_docs.py at every build: do not edit -->\n\n"
    for name, make in PAGES.items():
        write_if_changed(folder / name, header + make())


def setup(app: Sphinx) -> ExtensionMetadata:
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
