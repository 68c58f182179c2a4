"""``provisioner watch``: sync within seconds of a directory change, with the rails of ``sync``.

The I/O shell around ``core.watch``: a change detector asked every ``watch.poll_seconds`` (one base-scope
read: ``contextCSN`` on the OpenLDAP suffix, ``highestCommittedUSN`` on the AD rootDSE); on a change, once the
directory is quiet (debounce), the *roster* is read — every in-scope anchor and the disabled ones, 0.4 s at
25,000 people; unlike ``modifyTimestamp`` / ``uSNChanged`` filters it sees deletions and moves out of scope —
and compared with the previous one:

* leavers (deleted, moved out of scope, disabled) are locked at once by a fast plan that touches only them
  (the registry, one GET and one PUT per leaver), with the same rails: an incomplete or short read removes
  nobody, the removal threshold holds the plan, protected accounts are never touched;
* then a full run (``sync.run``) does the rest — hires, renames, moves, the leavers' kicks — in a background
  task, so that leavers seen while it runs are still locked at once;
* a full run also happens at start and every ``watch.full_interval_seconds``;
* when the detector cannot work (no syncprov overlay, no highestCommittedUSN, no read access to it), an ERROR
  names the fix, ``provisioner status`` exits 10, and the roster is read every ``watch.fallback_seconds``
  instead, so that leavers are still locked within that bound (``core.watch`` Rule 7); the detector is
  still asked every poll and takes over again as soon as it answers.

Failures (directory or homeserver down, a lost connection) are recorded in ``state_dir/watch.json``, retried
with the project's one :class:`RetryPolicy` backoff, and never stop the watch; a held threshold neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bridge.matrix.client import HomeserverClient, RetryPolicy
from bridge.matrix.errors import HomeserverError, MNotFound
from provisioner import exitcodes, runlock, sync
from provisioner.apply import AuditLog, Executor
from provisioner.config import Config, DirectoryConfig
from provisioner.core.actions import Action, LockUser, Plan, SaveRegistry
from provisioner.core.directory import Scope, interpret, set_aside
from provisioner.core.model import DirectorySnapshot, RawEntry
from provisioner.core.reconcile import Observed, ObservedUser, check_removals
from provisioner.core.scope import ScopeError
from provisioner.core.watch import (
    Decision,
    Detection,
    Notice,
    Roster,
    WatchPolicy,
    WatchState,
    decide,
    detection,
    handled,
    leaver_locks,
    leavers,
    roster_changed,
    roster_trusted,
)
from provisioner.ldap_reader import (
    DirectoryConfigError,
    DirectoryError,
    DirectoryReader,
    DirectoryUnreachable,
    read_directory_sync,
)
from provisioner.observe import read_registry

log = logging.getLogger(__name__)

#: Reconnecting to a directory or homeserver that went away: 1 s, 2 s, 4 s … capped at 30 s, jittered.
STATUS_EVERY_SECONDS = 5.0

RECONNECT = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=30.0)


class DetectionUnavailable(DirectoryConfigError):
    """The directory answers, but the change detector cannot work on it; the message names the fix."""


RUNBOOK_SYNCPROV = 'docs/RUNBOOK.md, "Enabling syncprov"'


class Detector(Protocol):
    name: str

    def check(self) -> str | None:
        """The directory's change token now (blocking); raises DirectoryError when it cannot be read."""

    def close(self) -> None: ...


class NoDetector:
    name = "none"

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class _LdapDetector(ABC):
    """One kept-open python-ldap connection reading one attribute of one entry."""

    name = "ldap"
    attribute = ""

    def __init__(self, cfg: DirectoryConfig) -> None:
        self.cfg = cfg
        self.conn: Any = None

    def _open(self) -> Any:
        from provisioner.ldap_reader import PythonLdapBackend

        backend = PythonLdapBackend(self.cfg)
        backend.open()
        return backend.conn

    @abstractmethod
    def _dn(self) -> str: ...

    def check(self) -> str | None:
        import ldap

        try:
            if self.conn is None:
                self.conn = self._open()
            rows = self.conn.search_s(self._dn(), ldap.SCOPE_BASE, "(objectClass=*)", [self.attribute])
        except (ldap.INSUFFICIENT_ACCESS, ldap.NO_SUCH_OBJECT) as e:
            # Refused, or hidden by an ACL (slapd answers noSuchObject for an entry one may not see).
            self.close()
            raise DetectionUnavailable(self.missing(f"{type(e).__name__}")) from None
        except ldap.LDAPError as e:
            self.close()
            raise DirectoryUnreachable(f"change detection ({self.name}) on {self.cfg.uri}: {e}") from None
        values = sorted(v.decode() for v in (rows[0][1].get(self.attribute, []) if rows else []))
        if not values:
            raise DetectionUnavailable(self.missing("not there or not readable"))
        return ";".join(values)

    @abstractmethod
    def missing(self, why: str) -> str:
        """Why detection cannot work and what fixes it, for the log and ``provisioner status``."""

    def close(self) -> None:
        if self.conn is not None:
            import ldap

            with contextlib.suppress(ldap.LDAPError):
                self.conn.unbind_s()
            self.conn = None


class CsnDetector(_LdapDetector):
    """OpenLDAP: ``contextCSN`` of the suffix entry, which the syncprov overlay moves with every write."""

    name = "csn"
    attribute = "contextCSN"

    def __init__(self, cfg: DirectoryConfig) -> None:
        super().__init__(cfg)
        self.suffix: str | None = None

    def _dn(self) -> str:
        import ldap

        if self.suffix is None:
            rows = self.conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
            contexts = [v.decode() for v in rows[0][1].get("namingContexts", [])] if rows else []
            base = self.cfg.base_dn.lower()
            found = [c for c in contexts if base == c.lower() or base.endswith("," + c.lower())]
            self.suffix = max(found, key=len) if found else self.cfg.base_dn
        return self.suffix

    def missing(self, why: str) -> str:
        return (
            f"contextCSN of {self.suffix or self.cfg.base_dn} at {self.cfg.uri}: {why}. Enable the syncprov "
            f"overlay on that database (see {RUNBOOK_SYNCPROV}), or, if it is enabled, let "
            f"{self.cfg.bind_dn} read contextCSN on {self.suffix or self.cfg.base_dn}"
        )


class UsnDetector(_LdapDetector):
    """Active Directory: ``highestCommittedUSN`` on the rootDSE moves with every committed write."""

    name = "usn"
    attribute = "highestCommittedUSN"

    def _dn(self) -> str:
        return ""

    def missing(self, why: str) -> str:
        return (
            f"highestCommittedUSN on the rootDSE of {self.cfg.uri}: {why}. Not an Active Directory server? "
            "Set directory.change_detection: csn for OpenLDAP (with the syncprov overlay), or none"
        )


def make_detector(cfg: DirectoryConfig) -> Detector:
    mode = cfg.change_detection
    if mode == "auto":
        mode = "usn" if cfg.preset == "active_directory" else "csn"
    if mode == "csn":
        return CsnDetector(cfg)
    if mode == "usn":
        return UsnDetector(cfg)
    return NoDetector()


@dataclass
class WatchStatus:
    """What ``provisioner status`` shows about the watch (``state_dir/watch.json``)."""

    pid: int = field(default_factory=os.getpid)
    detector: str = "none"
    started_at: float = field(default_factory=time.time)
    last_check: dict[str, Any] = field(default_factory=dict)
    last_run: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # a held threshold, an unreachable server: what needs a human
    # Set while the detector cannot work (core.watch Rule 7): why, since when, the fallback's interval and
    # its last roster read. `provisioner status` exits 10 while a running watch has it.
    fallback: dict[str, Any] | None = None

    def save(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        path = Path(state_dir) / "watch.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)


@dataclass
class FastResult:
    locked: list[str]
    held: str | None = None  # the removal threshold held these locks
    untrusted: str | None = None  # the read was incomplete or short: no lock (the full sync adds only)
    failed: int = 0


def read_roster(cfg: DirectoryConfig) -> Roster:
    """The in-scope anchors and the disabled ones (blocking): what the fast path compares."""
    anchor = cfg.attributes.anchor
    with DirectoryReader(cfg) as reader:
        people, reason = reader.search_all(cfg.filter, [anchor])
        disabled: list[RawEntry] = []
        if cfg.disabled_filter and reason is None:
            disabled, why = reader.search_all(f"(&{cfg.filter}{cfg.disabled_filter})", [anchor])
            if why:
                reason = f"reading disabled accounts: {why}"
    # Out of scope or in a leavers container: gone from the roster, so a move there is a leaver at once.
    aside = {a.dn for a in set_aside(people, Scope(cfg.exclude, cfg.leavers), anchor)}
    people = [e for e in people if e.dn not in aside]
    disabled = [e for e in disabled if e.dn not in aside]
    return Roster(
        frozenset(a for e in people if (a := e.first(anchor))),
        frozenset(a for e in disabled if (a := e.first(anchor))),
        reason is None,
        reason,
    )


async def lock_leavers(
    cfg: Config,
    leaving: tuple[tuple[str, str], ...],
    roster: Roster,
    *,
    now: float,
    announce: Callable[[list[str]], None] = lambda uids: None,
) -> FastResult:
    """The fast path: lock ``leaving`` (anchor, cause) with the rails of a sync, and nobody else.

    ``announce`` hears the accounts about to be locked before the first write (a full run in progress must
    not unlock them: ``core.watch.keep_locked``).
    """
    token = cfg.homeserver.admin_token
    assert token is not None
    async with HomeserverClient(cfg.homeserver.url, token) as client:
        who = await client.whoami()
        registry, last_good = await read_registry(client, who.user_id)
        policy = sync.sync_policy(cfg, who.user_id, profile_fields=True)
        users: dict[str, ObservedUser] = {}
        for anchor, _ in leaving:
            entry = registry.get(anchor)
            if entry is None:
                continue
            uid = f"@{entry.localpart}:{cfg.homeserver.server_name}"
            try:
                u = await client.get_user(uid)
            except MNotFound:
                continue
            users[uid] = ObservedUser(uid, u.displayname, u.admin, u.deactivated, u.locked)
        is_trusted, why = roster_trusted(roster, last_good, cfg.safety.min_directory_fraction)
        plan = leaver_locks(leaving, registry, users, policy, is_trusted=is_trusted, now=now)
        locks = [a.user_id for a in plan.actions if isinstance(a, LockUser)]
        if plan.held_removals:
            return FastResult([], untrusted=f"{plan.held_removals} leavers not locked: {why}")
        check = check_removals(
            plan,
            max(len(registry), len(roster.present)),
            max_removals=cfg.safety.max_removals,
            max_percent=cfg.safety.max_removal_percent,
            allow=None,
        )
        if not check.allowed:
            return FastResult([], held=check.reason)
        if not plan.actions:
            return FastResult([])
        announce(locks)
        observed = Observed(users=users, rooms={}, registry=registry, last_good_count=last_good)
        audit = AuditLog(cfg.sync.audit_log, "watch-" + uuid.uuid4().hex[:8])
        try:
            executor = Executor(
                client, observed, server_name=cfg.homeserver.server_name, provisioner=who.user_id, audit=audit
            )
            report = await executor.run(plan)
        finally:
            audit.close()
        return FastResult(locks, failed=len(report.failed))


async def confirm_locks(cfg: Config, uids: Collection[str], *, now: float) -> list[str]:
    """After a full run that overlapped fast locks: each of ``uids`` is still locked, with its lock date.

    The full run may have rewritten a registry shard from a copy read before the fast lock (Rule 6 of
    ``core.watch``); this puts the lock date back (and the lock, should anything have lifted it).
    """
    token = cfg.homeserver.admin_token
    assert token is not None
    server = cfg.homeserver.server_name
    async with HomeserverClient(cfg.homeserver.url, token) as client:
        who = await client.whoami()
        registry, _ = await read_registry(client, who.user_id)
        actions: list[Action] = []
        users: dict[str, ObservedUser] = {}
        entries = []
        for anchor, e in registry.items():
            uid = f"@{e.localpart}:{server}"
            if uid not in uids:
                continue
            u = await client.get_user(uid)
            users[uid] = ObservedUser(uid, u.displayname, u.admin, u.deactivated, u.locked)
            if not u.locked and not u.deactivated:
                actions.append(LockUser(uid, "left the directory (re-locked after an overlapping full run)"))
            if e.locked_since is None:
                entries.append((anchor, e.localpart, now, e.profile))
        if entries:
            actions.insert(0, SaveRegistry(tuple(entries)))
        if not actions:
            return []
        log.warning("re-recording %d fast locks after an overlapping full run", len(actions))
        observed = Observed(users=users, rooms={}, registry=registry)
        audit = AuditLog(cfg.sync.audit_log, "watch-" + uuid.uuid4().hex[:8])
        try:
            executor = Executor(client, observed, server_name=server, provisioner=who.user_id, audit=audit)
            await executor.run(Plan(tuple(actions), "", now))
        finally:
            audit.close()
        return [a.user_id for a in actions if isinstance(a, LockUser)]


T = TypeVar("T")


async def in_thread(fn: Callable[[], T], *, name: str) -> T:
    """``fn()`` in a daemon thread with its own event loop.

    Why not ``asyncio.to_thread``: a full run computes for seconds at 25,000 people (interpreting the read,
    the layout, reconcile), which would stall this loop and the leavers' fast path with it; in a thread the
    interpreter switches between the two every few milliseconds. Daemon, so that stopping the watch does not
    wait for a first sync of an hour: a run stopped half-way loses nothing the next one does not redo.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def target() -> None:
        try:
            value = fn()
        except BaseException as e:  # handed to the awaiting coroutine, which records it
            loop.call_soon_threadsafe(deliver, False, e)
        else:
            loop.call_soon_threadsafe(deliver, True, value)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


class Watch:
    """One watch over one config. :meth:`run` loops until ``stop`` is set; every failure is retried.

    Full runs (``sync.run``: ~8 s at 25,000 people) go in a background thread so that the poll loop keeps
    going: a leaver seen meanwhile is locked by the fast path at once, under the same run lock (this process
    holds it while any of its runs acts), and the full run is told not to unlock them.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        detector: Detector | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector or make_detector(cfg.directory)
        self.clock = clock
        self.rng = rng or random.Random()
        w = cfg.watch
        self.policy = WatchPolicy(w.poll_seconds, w.debounce_seconds, w.max_delay_seconds,
                                  w.full_interval_seconds, w.fallback_seconds)  # fmt: skip
        self.state = WatchState()
        self.detection = Detection()
        self.held_roster: Roster | None = None  # the fallback's roster the threshold held: not acted on again
        self.roster: Roster | None = None  # the last complete roster whose leavers were handled
        self.roster_at = float("-inf")
        self.status = WatchStatus(detector=self.detector.name)
        self.failures = 0
        self.runs = 0
        self.full_task: asyncio.Task[int] | None = None
        self.full_due = False  # changes the fast path cannot do arrived while a full run was going
        self.locked_meanwhile: set[str] = set()  # fast locks during the current full run
        self._lock = contextlib.ExitStack()
        self._lock_users = 0
        self._saved_at = float("-inf")

    # --- the run lock, shared by this process's runs --------------------------------------------------

    def _acquire(self, what: str) -> None:
        if self._lock_users == 0:
            self._lock.enter_context(runlock.hold(self.cfg.sync.state_dir, "run", what))
        self._lock_users += 1

    def _release(self) -> None:
        self._lock_users -= 1
        if self._lock_users == 0:
            self._lock.close()

    # --- status -----------------------------------------------------------------------------------------

    def _record_check(self, token: str | None, seconds: float, error: str | None = None) -> None:
        now = self.clock()
        self.status.last_check = {"at": now, "token": token, "ms": round(seconds * 1000, 2),
                                  "error": error}  # fmt: skip
        # `provisioner status` shows the last check; a write every few seconds keeps it current enough.
        if now - self._saved_at >= STATUS_EVERY_SECONDS:
            self._save_status()

    def _save_status(self) -> None:
        self._saved_at = self.clock()
        self.status.save(self.cfg.sync.state_dir)

    def _record_run(self, kind: str, code: int, message: str | None, started: float, **extra: Any) -> None:
        self.runs += 1
        self.status.last_run = {"at": self.clock(), "kind": kind, "exit_code": code, "message": message,
                                "seconds": round(time.monotonic() - started, 3), **extra}  # fmt: skip
        self.status.problem = message
        self._save_status()
        level = logging.INFO if code == exitcodes.OK else logging.WARNING
        log.log(level, "watch run (%s): exit %d%s", kind, code, f": {message}" if message else "")

    async def _guarded(self, kind: str, what: Callable[[float], Awaitable[int]]) -> int:
        """Run ``what`` under the run lock; any failure becomes an exit code in the status, never an error."""
        started = time.monotonic()
        try:
            self._acquire(f"watch {kind} run")
        except runlock.Locked as e:
            self._record_run(kind, exitcodes.LOCKED, str(e), started)
            return exitcodes.LOCKED
        try:
            return await what(started)
        except DirectoryError as e:
            self._record_run(kind, exitcodes.DIRECTORY, str(e), started)
            return exitcodes.DIRECTORY
        except ScopeError as e:
            # layout.onboarded_units names a unit the directory no longer has: nothing is applied until the
            # config is fixed, and the status says why.
            self._record_run(kind, exitcodes.CONFIG, str(e), started)
            return exitcodes.CONFIG
        except (HomeserverError, OSError) as e:
            self._record_run(
                kind, exitcodes.HOMESERVER, f"homeserver {self.cfg.homeserver.url}: {e}", started
            )
            return exitcodes.HOMESERVER
        except Exception as e:
            # A bug must not end the watch: leavers would stay unlocked until someone looked.
            log.exception("watch run (%s) failed", kind)
            self._record_run(kind, exitcodes.UNEXPECTED, f"unexpected error (see the log): {e!r}", started)
            return exitcodes.UNEXPECTED
        finally:
            self._release()

    # --- one poll ---------------------------------------------------------------------------------------

    async def check(self) -> str | None:
        started = time.perf_counter()
        try:
            token = await asyncio.to_thread(self.detector.check)
        except DirectoryError as e:
            self._record_check(None, time.perf_counter() - started, str(e))
            raise
        self._record_check(token, time.perf_counter() - started)
        return token

    async def step(self) -> Decision:
        """One poll: ask the detector, decide, and act if due. Raises nothing but CancelledError."""
        failed = False
        token = broken = None
        try:
            token = await self.check()
        except DetectionUnavailable as e:
            broken = str(e)  # not a failure to back off from: the fallback takes over (Rule 7)
        except DirectoryError as e:
            failed = True
            self.status.problem = str(e)
            self._save_status()
        fallback_due = self._detection_checked(token, broken)
        if self.full_task is not None and self.full_task.done():
            failed = await self._full_finished() or failed
        running = self.full_task is not None
        decision, self.state = decide(self.state, token, self.clock(), self.policy, full_running=running)
        code = exitcodes.OK
        if (decision is Decision.FULL and self.full_task is None) or (
            decision is Decision.CHANGES and self.roster is None and self.full_task is None
        ):
            self._start_full(full=True)
        elif decision is Decision.CHANGES and self.roster is not None:
            code = await self._guarded("leavers", self._changes)
        elif fallback_due:
            code = await self._fallback()
        if self.full_due and self.full_task is None:
            self._start_full(full=False)
        failed = failed or code in (exitcodes.DIRECTORY, exitcodes.HOMESERVER, exitcodes.LOCKED)
        self.failures = self.failures + 1 if failed else 0
        return decision

    def _detection_checked(self, token: str | None, broken: str | None) -> bool:
        """Rule 7: say when detection stops or starts working; True when the fallback's read is due."""
        now = self.clock()
        self.detection, notice, due = detection(self.detection, token=token, broken=broken, now=now,
                                                policy=self.policy)  # fmt: skip
        name, every = self.detector.name, self.policy.fallback_seconds
        if notice in (Notice.BROKEN, Notice.REMIND):
            log.error("change detection (%s) cannot work: %s. Until it does, leavers are found by reading "
                      "the roster every %g s (watch.fallback_seconds)", name, broken, every)  # fmt: skip
            self.status.fallback = {"reason": broken, "since": self.detection.since, "every_seconds": every,
                                    "last_read": (self.status.fallback or {}).get("last_read")}  # fmt: skip
            self._save_status()
        elif notice is Notice.RECOVERED:
            log.warning(
                "change detection (%s) works again (token %s): the roster fallback stops", name, token
            )
            self.status.fallback = None
            self._save_status()
        return due

    async def _fallback(self) -> int:
        """Rule 7: read the roster; act on leavers and queue a full run if it changed."""
        started = time.perf_counter()
        read_at = self.clock()
        try:
            roster = await asyncio.to_thread(read_roster, self.cfg.directory)
        except DirectoryError as e:
            self._record_fallback(read_at, started, error=str(e))
            return exitcodes.DIRECTORY
        self._record_fallback(read_at, started, people=len(roster.present), error=roster.stop_reason)
        if not roster.complete:
            return exitcodes.INCOMPLETE_READ  # an incomplete read locks nobody (Rule 4); the next one may do
        if self.roster is None:
            self.roster, self.roster_at = roster, read_at
            return exitcodes.OK
        changed = roster_changed(self.roster, roster)
        if not changed or roster == self.held_roster:
            return exitcodes.OK  # a held change is told once, not every read, until the directory moves

        async def act(started: float) -> int:
            return await self._act_on(roster, read_at, started, full=changed)

        code = await self._guarded("leavers", act)
        self.held_roster = roster if code == exitcodes.REMOVALS_HELD else None
        return code

    def _record_fallback(
        self, at: float, started: float, *, people: int = 0, error: str | None = None
    ) -> None:
        if self.status.fallback is None:
            return
        self.status.fallback["last_read"] = {"at": at, "ms": round((time.perf_counter() - started) * 1000, 1),
                                             "people": people, "error": error}  # fmt: skip
        if error or at - self._saved_at >= STATUS_EVERY_SECONDS:
            self._save_status()

    async def _changes(self, started: float) -> int:
        """Read the roster; lock leavers now; queue a full run for everything else (Rule 5)."""
        read_at = self.clock()
        roster = await asyncio.to_thread(read_roster, self.cfg.directory)
        return await self._act_on(roster, read_at, started, full=True)

    async def _act_on(self, roster: Roster, read_at: float, started: float, *, full: bool) -> int:
        """Lock the leavers between the last roster and ``roster``; queue a full run if ``full``."""
        assert self.roster is not None
        leaving = leavers(self.roster, roster)
        code = exitcodes.OK
        if leaving:
            fast = await lock_leavers(self.cfg, leaving, roster, now=read_at, announce=self._announce)
            if fast.held:
                # Nothing else runs either: the threshold holds the whole change, as it holds a sync.
                self.state = handled(self.state, full=False, now=read_at)
                self._record_run("leavers", exitcodes.REMOVALS_HELD, fast.held, started)
                return exitcodes.REMOVALS_HELD
            code = exitcodes.PARTIAL if fast.failed else exitcodes.OK
            self._record_run("leavers", code, fast.untrusted, started, locked=fast.locked)
        if roster.complete:
            self.roster, self.roster_at = roster, read_at
        self.full_due = self.full_due or full
        self.state = handled(self.state, full=False, now=read_at)
        return code

    def _announce(self, uids: list[str]) -> None:
        if self.full_task is not None:
            self.locked_meanwhile.update(uids)

    # --- full runs in the background ---------------------------------------------------------------------

    def _start_full(self, *, full: bool) -> None:
        kind = "full" if full else "changes"
        self.full_due = False
        self.locked_meanwhile = set()

        def work() -> tuple[float, DirectorySnapshot, sync.RunResult]:
            read_at = self.clock()
            snapshot = interpret(read_directory_sync(self.cfg.directory), self.cfg.directory_policy())
            result = asyncio.run(sync.run(self.cfg, apply=True, snapshot=snapshot, progress=False,
                                          clock=self.clock, keep_locked=self.locked_meanwhile))  # fmt: skip
            return read_at, snapshot, result

        async def body(started: float) -> int:
            read_at, snapshot, result = await in_thread(work, name=f"watch {kind} run")
            if snapshot.complete and result.exit_code != exitcodes.REMOVALS_HELD and read_at > self.roster_at:
                self.roster, self.roster_at = Roster.of(snapshot), read_at
            self.state = handled(self.state, full=full, now=read_at)
            done = dict(result.report.done) if result.report else {}
            held = f"{result.plan.held_removals} removals held: " + "; ".join(result.plan.notes)
            message = result.message or (held if result.plan.held_removals else None)
            self._record_run(kind, result.exit_code, message, started, done=done)
            return result.exit_code

        self.full_task = asyncio.create_task(self._guarded(kind, body), name=f"watch {kind} run")

    async def _full_finished(self) -> bool:
        """Collect the finished full run; put back the fast locks it overlapped. True if it failed."""
        assert self.full_task is not None
        code = self.full_task.result()
        self.full_task = None
        if self.locked_meanwhile:
            uids, self.locked_meanwhile = self.locked_meanwhile, set()

            async def confirm(started: float) -> int:
                await confirm_locks(self.cfg, uids, now=self.clock())
                return exitcodes.OK

            await self._guarded("leavers", confirm)
        return code in (exitcodes.DIRECTORY, exitcodes.HOMESERVER, exitcodes.LOCKED)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; back off after failures with :data:`RECONNECT`."""
        self.status.save(self.cfg.sync.state_dir)
        log.info("watching %s with %s change detection", self.cfg.directory.uri, self.detector.name)
        # A roster now lets the fast path lock leavers during the first full run (an hour for a first sync of
        # 25,000): whoever leaves after this read is caught; whoever left before is the full run's.
        with contextlib.suppress(DirectoryError):
            roster = await asyncio.to_thread(read_roster, self.cfg.directory)
            if roster.complete:
                self.roster, self.roster_at = roster, self.clock()
        try:
            while not stop.is_set():
                await self.step()
                delay = self.policy.poll_seconds
                if self.failures:
                    delay = max(delay, RECONNECT.backoff(self.failures - 1, self.rng))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            if self.full_task is not None:
                # A full run is idempotent: stopping it half-way loses nothing the next run does not redo.
                self.full_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.full_task
            self.detector.close()


async def watch_main(cfg: Config, stop: asyncio.Event | None = None) -> int:
    """Hold the watch lock for the life of the watch and run it; a second watch gets :class:`Locked`."""
    stop = stop or asyncio.Event()
    with runlock.hold(cfg.sync.state_dir, "watch", "watch"):
        await Watch(cfg).run(stop)
    return exitcodes.OK
