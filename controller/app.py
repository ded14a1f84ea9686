"""The os-ken OpenFlow 1.3 application: wires switch events to the reconciler, serves the API.

Owns only the os-ken glue: declared handlers (`@set_ev_cls`) that hand connections, barrier and
multipart replies and errors to `ReplyRouter` / `Reconciler`, and `start()`, which starts the
reconciler's worker and the HTTP API. Nothing happens in `__init__` (os-ken forbids sending
events there). Settings come from os-ken's CONF group `leo_controller`, set by `python -m
controller` (see controller/__main__.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from os_ken import cfg
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    HANDSHAKE_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from controller.auth import read_token_file
from controller.errors import ControllerStartError
from controller.ofswitch import OFSwitch, ReplyRouter
from controller.reconciler import Reconciler
from controller.server import ApiServer

CONF_GROUP = "leo_controller"

cfg.CONF.register_opts(
    [
        cfg.StrOpt("api-host", default="127.0.0.1", help="address of the local HTTP API"),
        cfg.IntOpt("api-port", default=None, help="port of the local HTTP API (required)"),
        cfg.StrOpt("state-file", default=None, help="where the applied snapshot is kept"),
        cfg.FloatOpt("reply-timeout-s", default=5.0, help="barrier / flow-stats reply timeout"),
        cfg.StrOpt("token-file", default=None, help="bearer token of the API (mode 0600)"),
        cfg.BoolOpt("insecure-no-token", default=False, help="serve the API without a token"),
    ],
    group=CONF_GROUP,
)


class RouteController(app_manager.OSKenApp):
    """Keeps every connected switch's flows equal to the routes of the latest snapshot."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    router: ReplyRouter
    reconciler: Reconciler

    def start(self) -> Any:
        opts = getattr(self.CONF, CONF_GROUP)
        if opts.api_port is None:
            raise ControllerStartError(f"{CONF_GROUP}.api_port is not set: expected a TCP port")
        self.router = ReplyRouter()
        self._drivers: dict[int, OFSwitch] = {}
        self._drivers_lock = threading.Lock()
        state = Path(opts.state_file) if opts.state_file else None
        self.reconciler = Reconciler(state_path=state, reply_timeout_s=opts.reply_timeout_s)
        self.reconciler.load_state()
        if opts.token_file is None and not opts.insecure_no_token:
            raise ControllerStartError(f"{CONF_GROUP}.token_file is not set: expected the "
                                       "run's token file, or insecure_no_token")
        token = read_token_file(Path(opts.token_file)) if opts.token_file else None
        self.api = ApiServer(opts.api_host, opts.api_port, self.reconciler, token=token)
        self.threads.append(self.api.serve_in_thread())
        worker = threading.Thread(target=self.reconciler.run, name="reconciler", daemon=True)
        worker.start()
        self.threads.append(worker)
        self.logger.info("API on http://%s:%d, state file %s", opts.api_host, opts.api_port, state)
        return super().start()

    def stop(self) -> None:
        self.reconciler.stop()
        self.api.shutdown()
        super().stop()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        datapath = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            driver = OFSwitch(datapath, self.router)
            with self._drivers_lock:
                self._drivers[id(datapath)] = driver
            self.reconciler.switch_connected(driver)
        elif ev.state == DEAD_DISPATCHER:
            self.router.on_disconnect(datapath)
            with self._drivers_lock:
                driver = self._drivers.pop(id(datapath), None)
            if driver is not None:
                self.reconciler.switch_disconnected(driver.dpid, driver)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        self.router.on_barrier_reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, ev: Any) -> None:
        self.router.on_flow_stats_reply(ev.msg)

    @set_ev_cls(
        ofp_event.EventOFPErrorMsg, [HANDSHAKE_DISPATCHER, CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def _error(self, ev: Any) -> None:
        self.logger.warning(
            "switch %s: OFPT_ERROR type=%s code=%s xid=%s",
            ev.msg.datapath.id,
            ev.msg.type,
            ev.msg.code,
            ev.msg.xid,
        )
        self.router.on_error(ev.msg)
