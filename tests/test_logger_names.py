"""Loggers are named by module (``__name__``), so a log line says which module wrote it and ``-v`` filtering by
the ``hf_cache`` hierarchy reaches every one of them."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import hf_cache

PACKAGE = Path(hf_cache.__file__).parent


def _named_loggers() -> list[str]:
    """Every ``logging.getLogger(<literal>)`` in the package, as ``path:line name``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith("hf_cache")
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.args[0].value}")
    return found


def test_every_package_logger_is_named_by_its_module() -> None:
    assert _named_loggers() == [], "use logging.getLogger(__name__)"


def test_module_loggers_sit_under_hf_cache(caplog) -> None:
    from hf_cache.mount import supervisor
    from hf_cache.refresh import lease, publish

    assert [m.log.name for m in (supervisor, lease, publish)] == [
        "hf_cache.mount.supervisor",
        "hf_cache.refresh.lease",
        "hf_cache.refresh.publish",
    ]
    caplog.set_level(logging.INFO, logger="hf_cache")  # one level for the whole hierarchy reaches each module
    lease.log.info("from the lease")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("hf_cache.refresh.lease", "from the lease")]
