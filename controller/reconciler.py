"""Keeps every connected switch's flows equal to the routes of the latest snapshot.

Owns the controller's state (pushed and applied generations, each switch's flows as last read or
written) and the one worker thread that changes switches: snapshot applies (make-before-break
rounds, then removals) and per-switch resyncs after a (re)connect. Switches are reached through
the `SwitchDriver` protocol (os-ken in production, a fake in unit tests); the clock is passed in.

Threads: API threads call `submit`, `status`, `routes`, `wait_applied`; os-ken handler threads
call `switch_connected` / `switch_disconnected`; only the worker thread sends to switches.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.errors import SnapshotError, StaleGenerationError, SwitchError
from controller.flows import (
    FlowDiff,
    FlowEntry,
    FlowKey,
    SwitchPlan,
    cookie_for,
    desired_flows,
    diff_flows,
    plan_rounds,
)
from controller.model import ApplyRecord, ControllerStatus, RouteTable, Snapshot, SwitchStatus
from controller.routing import Routes, compute_routes, route_table

LOG = logging.getLogger("controller.reconciler")


class PendingReply(Protocol):
    def wait(self, timeout_s: float) -> list[Any]: ...


class SwitchDriver(Protocol):
    """What the reconciler needs from a connected switch."""

    dpid: int
    address: str | None

    def send_batch(
        self,
        installs: Sequence[tuple[FlowKey, int | None]],
        removes: Sequence[FlowEntry],
        cookie: int,
    ) -> PendingReply: ...

    def read_flows(self, timeout_s: float) -> list[FlowEntry]: ...


@dataclass
class _Prepared:
    """A validated snapshot; the worker adds its routes and per-switch desired flows."""

    snapshot: Snapshot
    received_ns: int
    routes: Routes | None = None
    plans: dict[int, SwitchPlan] | None = None
    routes_ms: float = 0.0

    def prepare(self) -> dict[int, SwitchPlan]:
        """Compute routes and desired flows once (the worker does it ahead of `at_ns`)."""
        if self.plans is None:
            t0 = time.perf_counter()
            self.routes = compute_routes(self.snapshot)
            self.plans = desired_flows(self.routes)
            self.routes_ms = (time.perf_counter() - t0) * 1e3
        return self.plans


@dataclass
class _SwitchState:
    dpid: int
    driver: SwitchDriver | None = None
    installed: dict[FlowKey, FlowEntry] | None = None
    """The switch's flows as last read or written; None: unknown (must be read first)."""
    synced_generation: int | None = None
    last_sync_ms: float | None = None
    resyncs: int = 0
    last_error: str | None = None
    needs_resync: bool = False
    failures: int = 0
    """Consecutive failed resyncs; the next retry waits 2**(failures-1) s, at most 30 s."""
    retry_at_ns: int = 0


@dataclass
class _Job:
    kind: str  # "connect" | "disconnect" | "wake" | "stop"
    driver: SwitchDriver | None = None
    dpid: int | None = None


class Reconciler:
    """The controller's brain; see the module docstring for who calls what.

    Args:
        clock_ns: monotonic clock in ns (`time.monotonic_ns` in production).
        state_path: where the last applied snapshot is kept across controller restarts (None:
            not kept; after a restart the controller then waits for the next push).
        reply_timeout_s: how long a barrier or flow-stats reply may take before the switch is
            marked failed and resynchronised.
    """

    def __init__(
        self,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        state_path: Path | None = None,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self._clock_ns = clock_ns
        self._state_path = state_path
        self._reply_timeout_s = reply_timeout_s
        self._cond = threading.Condition()
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._pending: dict[int, _Prepared] = {}
        self._last_pushed: Snapshot | None = None
        self._current: _Prepared | None = None
        """The snapshot being enforced (set when its apply starts)."""
        self._applied_generation = 0
        """Generation of the last snapshot whose apply pass finished (or loaded from state)."""
        self._switches: dict[int, _SwitchState] = {}
        self._errors: deque[str] = deque(maxlen=20)
        self._last_apply: ApplyRecord | None = None
        self._stopped = threading.Event()

    # ----- state across restarts -------------------------------------------------------------

    def load_state(self) -> int | None:
        """Adopt the snapshot saved by a previous run as the applied one; returns its generation.

        Switches are then resynchronised to it as they reconnect, without flushing their flows.
        Raises SnapshotError when the file exists but is not a valid saved snapshot.
        """
        if self._state_path is None or not self._state_path.exists():
            return None
        try:
            saved = json.loads(self._state_path.read_text())
            snapshot = Snapshot.parse(saved["snapshot"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"state file {self._state_path}: {exc}") from None
        prepared = _Prepared(snapshot, self._clock_ns())
        prepared.prepare()
        with self._cond:
            self._current = prepared
            self._applied_generation = snapshot.generation
            self._last_pushed = snapshot
        LOG.info("loaded generation %d from %s", snapshot.generation, self._state_path)
        return snapshot.generation

    def _save_state(self, snapshot: Snapshot) -> None:
        if self._state_path is None:
            return
        tmp = self._state_path.with_name(self._state_path.name + ".tmp")
        tmp.write_text(json.dumps({"snapshot": snapshot.model_dump(mode="json")}))
        os.replace(tmp, self._state_path)

    # ----- API side ------------------------------------------------------------------------

    def submit(self, snapshot: Snapshot) -> bool:
        """Accept a snapshot for application (now, or at its `at_ns`).

        Returns False when it repeats the latest pushed snapshot exactly (nothing to do).
        Raises StaleGenerationError when its generation is not newer than the latest pushed.
        Routes are computed by the worker, so this returns in the time of a validation.
        """
        with self._cond:
            self._check_generation(snapshot)
            last = self._last_pushed
            if last is not None and last.generation == snapshot.generation:
                return False  # _check_generation made sure it is the same topology
            self._pending[snapshot.generation] = _Prepared(snapshot, self._clock_ns())
            self._last_pushed = snapshot
        self._jobs.put(_Job("wake"))
        return True

    def _check_generation(self, snapshot: Snapshot) -> None:
        last = self._last_pushed
        if last is None:
            return
        if snapshot.generation < last.generation or (
            snapshot.generation == last.generation and not snapshot.same_topology(last)
        ):
            raise StaleGenerationError(snapshot.generation, last.generation)

    def routes(self) -> RouteTable:
        """Routes the controller currently enforces (generation 0 and none before any push)."""
        with self._cond:
            current = self._current
        if current is None or current.routes is None:
            return RouteTable(generation=0)
        return route_table(current.snapshot, current.routes)

    def _complete(self) -> bool:
        current = self._current
        if current is None or current.snapshot.generation != self._applied_generation:
            return False
        gen = current.snapshot.generation
        for sw in current.snapshot.switches:
            state = self._switches.get(sw.dpid)
            if state is None or state.driver is None or state.synced_generation != gen:
                return False
        return True

    def status(self) -> ControllerStatus:
        with self._cond:
            current = self._current
            names = {s.dpid: s.name for s in current.snapshot.switches} if current else {}
            dpids = sorted(set(names) | set(self._switches))
            switches = []
            for dpid in dpids:
                st = self._switches.get(dpid, _SwitchState(dpid))
                switches.append(
                    SwitchStatus(
                        dpid=dpid,
                        name=names.get(dpid),
                        connected=st.driver is not None,
                        synced_generation=st.synced_generation,
                        flows=len(st.installed) if st.installed is not None else 0,
                        address=st.driver.address if st.driver is not None else None,
                        last_sync_ms=st.last_sync_ms,
                        resyncs=st.resyncs,
                        last_error=st.last_error,
                    )
                )
            return ControllerStatus(
                pid=os.getpid(),
                generation_pushed=self._last_pushed.generation if self._last_pushed else 0,
                generation_applied=self._applied_generation,
                complete=self._complete(),
                pending=sorted(self._pending),
                switches=switches,
                last_apply=self._last_apply,
                errors=list(self._errors),
            )

    def wait_applied(self, generation: int, timeout_s: float, all_switches: bool = True) -> bool:
        """Block until `generation` (or a newer one) is applied; False on timeout.

        With `all_switches`, also wait until every switch of that snapshot is connected and
        synchronised to it.
        """

        def reached() -> bool:
            if self._applied_generation < generation:
                return False
            return self._complete() or not all_switches

        with self._cond:
            return self._cond.wait_for(reached, timeout=max(0.0, timeout_s))

    # ----- os-ken side ---------------------------------------------------------------------

    def switch_connected(self, driver: SwitchDriver) -> None:
        self._jobs.put(_Job("connect", driver=driver, dpid=driver.dpid))

    def switch_disconnected(self, dpid: int, driver: SwitchDriver | Any) -> None:
        self._jobs.put(_Job("disconnect", driver=driver, dpid=dpid))

    # ----- worker --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopped.set()
        self._jobs.put(_Job("stop"))

    def run(self) -> None:
        """The worker loop: handle jobs in order, apply snapshots when due, retry failures."""
        while not self._stopped.is_set():
            try:
                job = self._jobs.get(timeout=self._next_due_s())
            except queue.Empty:
                job = None
            try:
                if job is not None:
                    self._handle(job)
                self._apply_due()
                self._prepare_scheduled()
                self._retry_failed()
            except Exception as exc:  # the worker must survive: the next job resyncs
                LOG.exception("reconciler step failed")
                self._record_error(f"internal: {type(exc).__name__}: {exc}")

    def run_until_idle(self) -> None:
        """Process every queued job and due snapshot, then return (tests drive the worker)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._handle(job)
        self._apply_due()
        self._prepare_scheduled()
        self._retry_failed()

    def _prepare_scheduled(self) -> None:
        """Compute routes of snapshots waiting for their `at_ns`, so that only the flow
        changes remain to do at the instant."""
        with self._cond:
            waiting = [p for p in self._pending.values() if p.routes is None]
        for prepared in waiting:
            prepared.prepare()

    def _next_due_s(self) -> float:
        with self._cond:
            due = [p.snapshot.at_ns for p in self._pending.values() if p.snapshot.at_ns]
            due += [s.retry_at_ns for s in self._switches.values() if s.needs_resync]
        if not due:
            return 1.0
        return min(1.0, max(0.0, (min(due) - self._clock_ns()) / 1e9))

    def _handle(self, job: _Job) -> None:
        if job.kind == "connect" and job.driver is not None:
            with self._cond:
                state = self._switches.setdefault(job.driver.dpid, _SwitchState(job.driver.dpid))
                state.driver = job.driver
                state.installed = None
                state.synced_generation = None
                self._cond.notify_all()
            LOG.info("switch %#x connected from %s", job.driver.dpid, job.driver.address)
            self._resync(state)
        elif job.kind == "disconnect" and job.dpid is not None:
            with self._cond:
                state = self._switches.get(job.dpid)
                if state is not None and state.driver is job.driver:
                    state.driver = None
                    state.installed = None
                    state.synced_generation = None
                    self._cond.notify_all()
                    LOG.info("switch %#x disconnected", job.dpid)

    def _record_error(self, text: str) -> None:
        LOG.error("%s", text)
        with self._cond:
            self._errors.append(text)

    def _fail_switch(self, state: _SwitchState, exc: SwitchError) -> None:
        """Forget what the switch holds; resync it later, backing off while it keeps failing."""
        with self._cond:
            state.installed = None
            state.synced_generation = None
            state.last_error = str(exc)
            state.needs_resync = state.driver is not None
            state.failures += 1
            backoff_s = min(30.0, 2.0 ** (state.failures - 1))
            state.retry_at_ns = self._clock_ns() + int(backoff_s * 1e9)
            self._cond.notify_all()
        self._record_error(str(exc))

    def _resync(self, state: _SwitchState) -> None:
        """Read the switch's flows; install what is missing, then remove what is stale."""
        driver = state.driver
        if driver is None:
            return
        started_ns = self._clock_ns()
        try:
            entries = driver.read_flows(self._reply_timeout_s)
            installed = {entry.key: entry for entry in entries}
            with self._cond:
                current = self._current
                state.installed = installed
            plan = current.plans.get(state.dpid) if current and current.plans else None
            if plan is None:
                return  # no snapshot yet, or a switch the snapshot does not name: leave it be
            diff = diff_flows(plan.flows, installed)
            generation = current.snapshot.generation
            batch = {state.dpid: (state, diff.install, [])}
            self._send_and_wait(batch, generation, raise_errors=True)
            batch = {state.dpid: (state, [], diff.remove)}
            self._send_and_wait(batch, generation, raise_errors=True)
        except SwitchError as exc:
            self._fail_switch(state, exc)
            return
        with self._cond:
            state.synced_generation = generation
            state.last_sync_ms = (self._clock_ns() - started_ns) / 1e6
            state.resyncs += 1
            state.needs_resync = False
            state.failures = 0
            state.last_error = None
            self._cond.notify_all()
        LOG.info(
            "switch %#x resynced to generation %d: %d installed, %d removed, %d kept",
            state.dpid,
            generation,
            len(diff.install),
            len(diff.remove),
            diff.kept,
        )

    def _retry_failed(self) -> None:
        now = self._clock_ns()
        with self._cond:
            failed = [
                s
                for s in self._switches.values()
                if s.needs_resync and s.driver and s.retry_at_ns <= now
            ]
        for state in failed:
            state.needs_resync = False
            self._resync(state)

    def _send_and_wait(
        self,
        batches: dict[
            int, tuple[_SwitchState, Sequence[tuple[FlowKey, int | None]], Sequence[FlowEntry]]
        ],
        generation: int,
        *,
        raise_errors: bool = False,
    ) -> set[int]:
        """Send each switch its batch, wait for every barrier; returns the dpids that failed.

        With `raise_errors` the first SwitchError propagates instead (the caller handles it).
        """
        cookie = cookie_for(generation)
        waiting: list[tuple[_SwitchState, Sequence, Sequence, PendingReply]] = []
        failed: set[int] = set()
        t0 = time.perf_counter()
        for state, installs, removes in batches.values():
            if not installs and not removes:
                continue
            driver = state.driver
            try:
                if driver is None:
                    raise SwitchError(state.dpid, "disconnected")
                waiting.append(
                    (state, installs, removes, driver.send_batch(installs, removes, cookie))
                )
            except SwitchError as exc:
                if raise_errors:
                    raise
                failed.add(state.dpid)
                self._fail_switch(state, exc)
        t1 = time.perf_counter()
        for state, installs, removes, pending in waiting:
            try:
                pending.wait(self._reply_timeout_s)
            except SwitchError as exc:
                if raise_errors:
                    raise
                failed.add(state.dpid)
                self._fail_switch(state, exc)
                continue
            view = state.installed
            if view is None:
                continue
            for key, out_port in installs:
                view[key] = FlowEntry(key, out_port, cookie)
            for entry in removes:
                if view.get(entry.key) == entry:
                    del view[entry.key]
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                "batch to %d switches: send %.2f ms, barriers %.2f ms",
                len(waiting),
                (t1 - t0) * 1e3,
                (time.perf_counter() - t1) * 1e3,
            )
        return failed

    def _apply_due(self) -> None:
        now = self._clock_ns()
        with self._cond:
            due = [
                g
                for g, p in self._pending.items()
                if not p.snapshot.at_ns or p.snapshot.at_ns <= now
            ]
            if not due:
                return
            generation = max(due)
            prepared = self._pending.pop(generation)
            superseded = sorted(g for g in self._pending if g < generation)
            for g in superseded:
                del self._pending[g]
        self._apply(prepared, superseded)

    def _apply(self, prepared: _Prepared, superseded: list[int]) -> None:
        """Make-before-break: install in rounds from the destination side, then remove."""
        plans = prepared.prepare()
        started_ns = self._clock_ns()
        snapshot = prepared.snapshot
        generation = snapshot.generation
        with self._cond:
            self._current = prepared  # switches that (re)connect from now on sync to it
            targets = [
                self._switches[s.dpid]
                for s in snapshot.switches
                if s.dpid in self._switches
                and self._switches[s.dpid].driver is not None
                and self._switches[s.dpid].installed is not None
            ]
        diffs: dict[int, FlowDiff] = {
            st.dpid: diff_flows(plans[st.dpid].flows, st.installed or {}) for st in targets
        }
        by_dpid = {st.dpid: st for st in targets}
        rounds = plan_rounds(
            {dpid: d.install for dpid, d in diffs.items()},
            lambda dpid, key: plans[dpid].next_dpid.get(key) if dpid in plans else None,
        )
        failed: set[int] = set()
        for round_ in rounds:
            batches = {
                dpid: (by_dpid[dpid], installs, [])
                for dpid, installs in round_.items()
                if dpid not in failed
            }
            failed |= self._send_and_wait(batches, generation)
        removals = {
            dpid: (by_dpid[dpid], [], d.remove)
            for dpid, d in diffs.items()
            if d.remove and dpid not in failed
        }
        failed |= self._send_and_wait(removals, generation)
        finished_ns = self._clock_ns()
        record = ApplyRecord(
            generation=generation,
            label=snapshot.label,
            at_ns=snapshot.at_ns,
            received_ns=prepared.received_ns,
            routes_ms=prepared.routes_ms,
            started_ns=started_ns,
            finished_ns=finished_ns,
            flow_mods=sum(len(d.install) + len(d.remove) for d in diffs.values()),
            switches_changed=sum(1 for d in diffs.values() if not d.empty),
            rounds=len(rounds) + (1 if removals else 0),
            superseded=superseded,
        )
        with self._cond:
            for st in targets:
                if st.dpid not in failed:
                    st.synced_generation = generation
            self._applied_generation = generation
            self._last_apply = record
            self._cond.notify_all()
        try:
            self._save_state(snapshot)
        except OSError as exc:
            self._record_error(f"state file {self._state_path}: {exc}")
        LOG.info(
            "generation %d%s applied in %.2f ms: %d flow-mods on %d switches in %d rounds%s",
            generation,
            f" ({snapshot.label})" if snapshot.label else "",
            record.apply_ms,
            record.flow_mods,
            record.switches_changed,
            record.rounds,
            f", {len(failed)} switches failed" if failed else "",
        )
