"""The IPAM plugin ``vxnet-ipam`` the agent writes into ``agent.cni_bin_dir``: a launcher.

The agent writes a three-line script rather than linking the console script ``vxnet-ipam`` that
``pyproject.toml`` declares (that one stays, for a runtime configured to find it on its own),
because a runtime waits for the plugin on every container start and the launcher starts faster:
it runs the system's ``python3`` (a distribution's optimised build) with ``-I -S``, so nothing is
scanned at start-up, and imports :mod:`vxnet.ipam_plugin` from this installation's directory.
The console script runs the venv's interpreter with ``site`` and imports the ``vxnet`` package.

Measured with ``benchmarks/ipam_launcher.py`` (CNI ADDs each way, alternating, against a unix
socket that answers at once; the development machine, 2 cores): 20 ADDs on a quiet machine,
console script median 14.2 ms (p90 15.7), launcher 9.2 ms (p90 9.6); 100 ADDs at load average
3.5, console script median 35.1 ms (min 12.8), launcher 20.4 ms (min 8.5). The launcher takes
about a third off every container start, so it stays.

Sans-IO: :func:`plugin_file` renders the file; :func:`plugin_python` runs the candidate
interpreters once to pick one.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from vxnet.overlay._local_model import ManagedFile

__all__ = ["PLUGIN_MARK", "PLUGIN_NAME", "plugin_file", "plugin_python"]

PLUGIN_NAME = "vxnet-ipam"
PLUGIN_MARK = "# vxnet-ipam, written by the vxnet agent"
PLUGIN_SCRIPT = f"""#!{{python}} -IS
{PLUGIN_MARK} (see vxnet.ipam_plugin); rewritten at its start
import sys
sys.path.insert(0, {{path!r}})
from vxnet.ipam_plugin import main
sys.exit(main({{socket!r}}))
"""


def plugin_file(bin_dir: str, python: str, source_dir: str, socket: str) -> ManagedFile:
    """The launcher ``<bin_dir>/vxnet-ipam``: ``python`` runs :mod:`vxnet.ipam_plugin` from
    ``source_dir`` (the directory holding the ``vxnet`` package), asking the agent at ``socket``.

    A file of that name without :data:`PLUGIN_MARK` is someone else's and is left alone.
    """
    text = PLUGIN_SCRIPT.format(python=python, path=source_dir, socket=socket)
    return ManagedFile(str(Path(bin_dir) / PLUGIN_NAME), text, 0o755, PLUGIN_MARK)


@functools.cache
def plugin_python() -> str:
    """The interpreter that starts fastest for ``vxnet-ipam``, which needs only the standard
    library and its own module (its directory is put on sys.path): the system's ``python3`` (a
    distribution's build is optimised) when it is 3.9 or newer, else the one under this venv."""
    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", "")):
        if not candidate or not Path(candidate).exists():
            continue
        try:
            done = subprocess.run(
                [candidate, "-IS", "-c", "import sys; sys.exit(sys.version_info < (3, 9))"],
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return candidate
    return sys.executable
