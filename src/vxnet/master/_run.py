"""The ``vxnet master`` process: the master's service and its HTTP API, until a signal.

SIGINT and SIGTERM stop it; SIGHUP reloads its TLS certificate, key and CA file (the log's and
the API's): new connections get the new ones, established connections (the log's peers among
them, so the quorum holds) are kept, and files that cannot be used are logged and refused, the
certificate in force staying. SIGHUP also reads the file's ``[network]`` again (the isolation
policy, new networks): a valid one becomes the master's, which the coordinator writes to the
replicated log as at start-up (refused, with the reasons logged, if it conflicts with the
allocations); an invalid file is logged and changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from vxnet.config import ConfigError, MasterConfig, load_config
from vxnet.http import serve_api
from vxnet.master._api import build_master_app
from vxnet.master._service import MasterConfigError, MasterService
from vxnet.pki import reload_logged
from vxnet.replog import LOG_FILE, SqliteLogStorage, StorageFailure, raise_plain

if TYPE_CHECKING:
    from vxnet.pki import TlsContext

__all__ = ["run_master"]

log = logging.getLogger("vxnet.master")


async def run_master(
    config: MasterConfig,
    *,
    config_path: Path | None = None,
    task_status: trio.TaskStatus[MasterService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one master (log replica, allocator, HTTP API) until SIGINT/SIGTERM; SIGHUP reloads
    its certificate, and its ``[network]`` from ``config_path``.

    Raises:
        MasterConfigError: The configuration conflicts with the log's allocations.
        StorageFailure: The log's disk cannot be used or failed.
        OSError: An address cannot be bound.
    """
    # Opening the file may create and fsync it: not on the event loop.
    storage = await trio.to_thread.run_sync(
        SqliteLogStorage, Path(config.master.data_dir) / LOG_FILE
    )
    master = MasterService(config, storage=storage)
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals,
        raise_plain(StorageFailure),
        raise_plain(MasterConfigError),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(master.serve)
            tls = _api_context(master)
            url = await nursery.start(
                partial(serve_api, build_master_app(master), config.master.listen, tls=tls)
            )
            log.info("master API on %s", url)
            task_status.started(master)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_logged(master.tls, log)
                    if config_path is not None:
                        await _reload_network(master, config_path)
                    continue
                log.info("received %s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _reload_network(master: MasterService, path: Path) -> None:
    """Take the ``[network]`` of the master's file again (logged; a bad file changes nothing)."""
    try:
        config = await trio.to_thread.run_sync(load_config, path, "master")
    except ConfigError as exc:
        log.error("SIGHUP: %s is not used: %s", path, exc)
        return
    if not isinstance(config, MasterConfig):
        return
    if config.network == master.config.network:
        log.info("SIGHUP: the [network] of %s is unchanged", path)
        return
    master.config = dataclasses.replace(master.config, network=config.network)
    log.info("SIGHUP: the [network] of %s is in force; writing it to the replicated log", path)


def _api_context(master: MasterService) -> TlsContext | None:
    """The API's server context in force, asked at each connection (None: plain HTTP)."""
    tls = master.tls
    if tls is None:
        return None
    if master.config.tls.open_reads:
        return lambda: tls.server_optional
    return lambda: tls.server
