"""The tier agent: a thread of ``hf-cache mount`` that keeps the local tree in step and promotes what the node read.

Each tick (1 s): every ``freshness`` the tree is synced from the mount (refs, trees, new snapshots, see tree.py);
every cold entry rclone holds bytes of (the node read it, or ``hf-cache warm`` did) is promoted - copied from
rclone's cache file when that is complete, else read through the mount with parallel segments - verified against
the manifest's sha256; and blobs are evicted to keep hot tier + rclone cache under the node cap. The agent is not
in the data path: a dead agent or rclone leaves every hot file readable (plain files and symlinks on the node).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from hf_cache import layout
from hf_cache.errors import IntegrityError
from hf_cache.mount.config import MountConfig
from hf_cache.mount.refresher import vfs_refresh
from hf_cache.node import evict as ev
from hf_cache.node import vfscache
from hf_cache.node.promote import promote_by_fetch, promote_from_file
from hf_cache.node.tree import Entry, Tier, load_entries, sync

log = logging.getLogger(__name__)

# rclone's own LRU limit as a share of the node cap: it holds cold files being read until they are promoted; the
# rest is for hot blobs (the tier evicts blobs whenever both together exceed the cap).
RCLONE_SHARE = 0.25
# How often the tree is synced from the mount. Cheap (a listing and the refs, which rclone serves from its caches;
# a manifest only for a new commit), so a moved ref reaches the tier within the mount's --freshness + this + 1 s.
SYNC_EVERY = 5.0


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry, cap: int) -> None:
        r = registry
        self.hot_bytes = Gauge("hfcache_node_hot_bytes", "Bytes of verified local blobs (the hot tier)", registry=r)
        self.hot_files = Gauge("hfcache_node_hot_files", "Local blobs in the hot tier", registry=r)
        self.cold_entries = Gauge("hfcache_node_cold_entries", "Snapshot entries still served by the mount", registry=r)
        self.usage = Gauge("hfcache_node_usage_bytes", "Hot tier + rclone cache bytes on disk", registry=r)
        self.cap = Gauge("hfcache_node_cap_bytes", "The node cap for hot tier + rclone cache", registry=r)
        self.promoted = Counter("hfcache_node_promoted", "Files promoted into the hot tier", registry=r)
        self.promoted_bytes = Counter("hfcache_node_promoted_bytes", "Bytes promoted into the hot tier", registry=r)
        self.refused = Counter(
            "hfcache_node_promote_refused",
            "Promotions refused because the bytes did not match the manifest's sha256 (corrupt object or block)",
            registry=r,
        )
        self.evicted = Counter("hfcache_node_evicted", "Blobs evicted from the hot tier (LRU)", registry=r)
        self.errors = Counter("hfcache_node_errors", "Tier ticks or promotions that failed (logged)", registry=r)
        self.cap.set(cap)


class NodeAgent:
    def __init__(
        self,
        tier: Tier,
        cache_dir: Path,
        remote_path: str,
        cap: int,
        registry: CollectorRegistry | None = None,
        freshness: float = 30.0,
        rclone_cap: int = 0,
        rc_port: int | None = None,
        interval: float = 1.0,
    ) -> None:
        self.tier = tier
        self.cache_dir = cache_dir
        self.remote_path = remote_path
        self.cap = cap
        self.rclone_cap = rclone_cap
        self.rc_port = rc_port
        self._logged: set[str] = set()  # sync problems already logged (each once, not every tick)
        self.metrics = NodeMetrics(registry or CollectorRegistry(), cap)
        self.freshness = freshness
        self.interval = interval
        self._last_sync = -1e18
        self._acted: dict[tuple[str, str, str], float] = {}  # entry -> when last promoted, refused or evicted
        self._wanted: set[tuple[str, str, str]] = set()  # entries the node read, not yet promoted

    def _relist(self, dirs: list[str]) -> None:
        """Ask rclone to re-list ``dirs`` (asked only for a manifest a ref names but the listing lacks)."""
        assert self.rc_port is not None
        vfs_refresh(self.rc_port, dirs, 30.0)

    def _rclone_bytes(self) -> int:
        return ev.usage(self.cache_dir / "vfs")

    def _rclone_reserved(self) -> int:
        """rclone may fill its own cap before its next eviction poll: blobs never take that room."""
        return max(self._rclone_bytes(), self.rclone_cap)

    def _make_room(self, entries: list[Entry], incoming: int) -> bool:
        blobs = ev.blobs_on_disk(self.tier)
        victims, fits = ev.plan(blobs, self._rclone_reserved(), self.cap, incoming)
        if incoming and not fits:
            return False
        for b in victims:
            ev.evict(self.tier, b, entries)
            for e in entries:
                if e.repo == b.repo and e.sha256 == b.sha256:
                    self._done((e.repo, e.sha, e.path))
            self.metrics.evicted.inc()
            log.info("evicted %s/blobs/%s (%d bytes, least recently used)", b.repo, b.sha256[:16], b.bytes)
        return True

    def _done(self, key: tuple[str, str, str]) -> None:
        """Promoted, refused or evicted now: only a read after this moment makes the entry wanted again (our own
        promotion read it too, and rclone records that access seconds later)."""
        self._acted[key] = time.time()
        self._wanted.discard(key)

    def promote_one(self, e: Entry, entries: list[Entry], require_cached: bool = True) -> bool:
        """Promote ``e`` if the node has read it (or unconditionally with ``require_cached=False``).

        Once rclone shows a read, the entry is wanted until it is promoted or refused, even if rclone evicts its
        cache file meanwhile (then it is read again through the mount)."""
        rel = layout.join(layout.HUB_DIR, e.repo, layout.snapshot_path(e.sha, e.path))
        key = (e.repo, e.sha, e.path)
        held, accessed = vfscache.read_by_node(self.cache_dir, self.remote_path, rel)
        acted = self._acted.get(key)
        if held and (acted is None or (accessed is not None and accessed > acted)):
            self._wanted.add(key)
        if key not in self._wanted and require_cached:
            return False
        st = vfscache.state(self.cache_dir, self.remote_path, rel, e.size)
        if not self._make_room(entries, e.size):
            return False
        try:
            if st is not None and st.complete:
                n = promote_from_file(self.tier, e, st.data, entries)
            else:
                n = promote_by_fetch(self.tier, e, entries)
        except IntegrityError as exc:
            self._done(key)  # not retried until the node reads it again

            self.metrics.refused.inc()
            log.error("%s", exc)
            return False
        except OSError as exc:  # the mount is down or the cache file went away: try again next tick
            self.metrics.errors.inc()
            log.warning("promoting %s/%s@%s failed: %s", e.repo, e.path, e.sha[:12], exc)
            return False
        self._done(key)  # evicted later, it comes back only when the node reads it again
        self.metrics.promoted.inc()
        self.metrics.promoted_bytes.inc(n)
        log.info("promoted %s/%s@%s (%d bytes, sha256 verified)", e.repo, e.path, e.sha[:12], n)
        return True

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= self.freshness:
            res = sync(self.tier, self._relist if self.rc_port else None)
            if res.mounted:  # until the mount is up (node start, self-heal), try again every tick
                self._last_sync = now
            for p in res.problems or []:
                if p not in self._logged:
                    self._logged.add(p)
                    log.warning("%s", p)
        entries = load_entries(self.tier)
        hot = {(e.repo, e.sha256) for e in entries if self.tier.is_hot(e)}
        for e in entries:
            if (e.repo, e.sha256) not in hot and self.promote_one(e, entries):
                hot.add((e.repo, e.sha256))
        self._make_room(entries, 0)
        blobs = ev.blobs_on_disk(self.tier)
        hot_bytes = sum(b.bytes for b in blobs)
        self.metrics.hot_bytes.set(hot_bytes)
        self.metrics.hot_files.set(len(blobs))
        self.metrics.cold_entries.set(sum(1 for e in entries if (e.repo, e.sha256) not in hot))
        self.metrics.usage.set(hot_bytes + self._rclone_bytes())

    def clean_temp(self) -> int:
        """Temp blobs and links left by a killed agent take disk and count against nothing: removed at start."""
        removed = 0
        tmp = self.tier.state / "tmp"
        if tmp.is_dir():
            for p in tmp.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
        return removed

    def run(self, stop: threading.Event) -> None:
        if removed := self.clean_temp():
            log.info("removed %d temp files a previous run left in %s", removed, self.tier.state / "tmp")
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # one failed tick must not end the agent; it is logged
                self.metrics.errors.inc()
                log.warning("node tier tick failed: %s", exc)
            stop.wait(self.interval)

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), name="node-tier", daemon=True)
        t.start()
        return t


def start_for_mount(cfg: MountConfig, registry: CollectorRegistry, stop: threading.Event) -> threading.Thread | None:
    """The hook ``hf-cache mount`` calls: start the agent when ``--tier-dir`` is set."""
    if cfg.tier_dir is None:
        return None
    tier = Tier.make(cfg.tier_dir, cfg.mountpoint)
    agent = NodeAgent(
        tier,
        cfg.cache_dir,
        cfg.remote_path,
        cfg.tier_cap_bytes,
        registry,
        freshness=min(cfg.freshness, SYNC_EVERY),
        rclone_cap=cfg.cache_max_bytes,
        rc_port=cfg.rc_port,
    )
    log.info("node tier at %s (HF_HOME for job pods), cap %d bytes for hot tier + rclone cache", tier.root, agent.cap)
    return agent.start(stop)
