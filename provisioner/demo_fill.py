"""The demo's two syncs: the people the banner names first, then the rest of the city in the background.

A first sync of the whole city takes many minutes (in the default ``tree`` layout everyone joins every space
above them, and joins into one room are serialised by Synapse), and nobody can log in before it ends. The
demo therefore first syncs only the banner's people's units, whole where a unit fits in one room, with every
unit of the directory kept (so that names and aliases are those of the full city), and presents that read as
incomplete: an incomplete read never removes, locks or kicks anyone and never becomes the
``last_good_count`` the next read is compared with (``core.reconcile`` Rule 3), so neither run can make the
other look untrusted. Of a unit larger than one room (the contact centre: 250 people at 2,000, 1,250 at
25,000) only the banner's people come first: the whole unit would be most of the first sync's joins, and the
full sync then splits it keeping them in the room they are in (``core.layout`` Rule 3). Then an ordinary
full sync fills in the rest; it converges from whatever the first one (or a run stopped by Ctrl-C) left.

Both hold the run lock (``runlock``) while they act: the directory watch starts only once the fill is done,
so that it never finds the lock taken, and a manual ``provisioner sync`` meanwhile is refused with a message
that names the demo's fill.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace

from bridge.matrix.errors import HomeserverError
from provisioner import exitcodes, runlock, sync
from provisioner.apply import Progress
from provisioner.config import Config
from provisioner.core.directory import interpret
from provisioner.core.model import DirectorySnapshot
from provisioner.ldap_reader import DirectoryError, read_directory

log = logging.getLogger(__name__)

FIRST_READ = "the demo syncs the banner's people's units first; the rest of the city follows"


def first_scope(snapshot: DirectorySnapshot, logins: Collection[str], capacity: int) -> DirectorySnapshot:
    """The units of the people with ``logins`` as an incomplete read of ``snapshot``.

    A unit with more enabled people than ``capacity`` (seats for people in one room) contributes only the
    people named; every other unit of theirs comes whole, so that they meet their colleagues at once.
    """
    named = {p.unit_key for p in snapshot.people if p.login in logins}
    sizes = Counter(p.unit_key for p in snapshot.enabled)
    whole = {k for k in named if sizes[k] <= capacity}
    return replace(
        snapshot,
        people=tuple(p for p in snapshot.people if p.unit_key in whole or p.login in logins),
        skipped=(),
        set_aside=(),
        complete=False,
        stop_reason=FIRST_READ,
    )


async def read_snapshot(cfg: Config) -> DirectorySnapshot:
    return interpret(await read_directory(cfg.directory), cfg.directory_policy())


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the fill ended: ``people``/``rooms``/``spaces`` of the full layout, or ``error`` if it did not."""

    exit_code: int
    seconds: float
    people: int = 0
    rooms: int = 0
    spaces: int = 0
    error: str | None = None


class Fill:
    """The full sync in a thread with its own event loop, owned by the demo: started, watched, stopped.

    A thread rather than a child process so that the demo's progress line reads the executor's own counter.
    """

    def __init__(self, cfg: Config, *, clock: sync.Clock = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.bar: Progress | None = None
        self.outcome: Outcome | None = None
        self.result: sync.RunResult | None = None
        self.finished = threading.Event()
        self._began = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._target, name="demo fill", daemon=True)

    def start(self) -> None:
        self._began = self.clock()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the run (the next demo's fill redoes what this one did not) and wait for the thread."""
        self._stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def line(self) -> str:
        """The one-line progress display."""
        bar = self.bar
        if bar is None:
            return "filling in the rest of the city: reading the directory and the server…"
        elapsed = max(self.clock() - bar.began, 1e-6) if bar.done else 0.0
        rate = bar.done / elapsed if elapsed else 0.0
        left = f", about {_duration((bar.total - bar.done) / rate)} left" if rate else ""
        pct = 100.0 * bar.done / bar.total if bar.total else 100.0
        failed = f", {bar.failed} failed" if bar.failed else ""
        return (f"filling in the rest of the city: {bar.done}/{bar.total} actions ({pct:.0f} %), "
                f"{rate:.1f}/s{left}{failed}")  # fmt: skip

    def _counter(self, total: int) -> Progress:
        self.bar = Progress(total, enabled=False)
        return self.bar

    async def _main(self) -> sync.RunResult:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._stopping:  # stop() came before this loop existed
            raise asyncio.CancelledError
        # The first read already logged the entries it skipped; the same warnings below the banner are noise.
        read = await read_directory(self.cfg.directory)
        snapshot = interpret(read, self.cfg.directory_policy(), skip_log=False)
        return await sync.run(
            self.cfg, apply=True, progress=False, progress_bar=self._counter, snapshot=snapshot
        )

    def _target(self) -> None:
        code, error, result = exitcodes.OK, None, None
        try:
            with runlock.hold(self.cfg.sync.state_dir, "run", "demo: filling in the city"):
                result = asyncio.run(self._main())
            code, error = result.exit_code, result.message
        except asyncio.CancelledError:
            code, error = exitcodes.HOMESERVER, "stopped"
        except runlock.Locked as e:
            code, error = exitcodes.LOCKED, str(e)
        except DirectoryError as e:
            code, error = exitcodes.DIRECTORY, f"the directory: {e}"
        except (HomeserverError, OSError) as e:
            code, error = exitcodes.HOMESERVER, f"the homeserver: {e}"
        except Exception as e:  # an owned background task: logged, and reported by the demo, never lost
            log.exception("filling in the city failed")
            code, error = exitcodes.HOMESERVER, f"{type(e).__name__}: {e}"
        finally:
            seconds = self.clock() - self._began
            if result is not None:
                self.result = result
                layout = result.desired.layout
                self.outcome = Outcome(code, seconds, len(result.snapshot.enabled), len(layout.rooms),
                                       len(layout.spaces), error)  # fmt: skip
            else:
                self.outcome = Outcome(code, seconds, error=error)
            self.finished.set()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
