"""Which snapshot folders the supervisor lists itself, so that no job's first open waits on a first listing.

rclone lists a folder from S3 the first time something looks a name up in it, and it runs with
``--low-level-retries 1``: one S3 5xx or reset at that moment fails the job's open with EIO, and during an outage a
snapshot folder that no reader opened before cannot be opened at all. A snapshot folder (``hub/<repo>/snapshots/<sha>``)
never changes once published and rclone keeps listings for the mount's lifetime (``--dir-cache-time``), so one
successful listing is enough: the supervisor asks rclone for it (rc ``vfs/refresh``, recursive because a snapshot
folder can have subfolders) as soon as the folder shows up in a re-listed ``snapshots/``, and asks again on later
polls for those that failed. A recursive ``vfs/refresh`` that fails leaves rclone's listing as it was.

Pure bookkeeping here; the supervisor does the I/O (refresher.vfs_refresh, listings through the mount).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hf_cache import layout
from hf_cache.layout import HUB_DIR

BATCH = 32  # folders per rc call: progress is kept per call, and one call stays short


def snapshot_folders(repo_dir: str, entries: Iterable[str]) -> list[str]:
    """The snapshot folders of ``hub/<repo_dir>`` from the names in its ``snapshots/`` folder."""
    base = layout.join(HUB_DIR, repo_dir, layout.SNAPSHOTS_DIR)
    return [layout.join(base, name) for name in sorted(entries) if name and not name.startswith(".")]


def batches(folders: list[str], size: int = BATCH) -> list[list[str]]:
    """One folder first, then ``size`` per rc call. All S3 requests of an rclone share one pacer, which after a 5xx
    spaces them 2 s apart: when S3 fails, the supervisor stops after one folder's two tries instead of holding every
    job's uncached read back behind a whole batch of failing listings."""
    return [folders[:1]] + [folders[i : i + size] for i in range(1, len(folders), size)] if folders else []


@dataclass
class Prelist:
    """Snapshot folders seen in the mount, and those rclone has listed since it (re)started."""

    known: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)

    def see(self, folders: Iterable[str]) -> None:
        self.known.update(folders)

    def todo(self) -> list[str]:
        """Known but not yet listed, in a stable order (oldest repos first does not matter: all are immutable)."""
        return sorted(self.known - self.listed)

    def record(self, result: dict[str, str]) -> dict[str, str]:
        """Take one ``vfs/refresh`` answer; return the folders whose listing failed, with rclone's error.

        A folder rclone no longer knows (``file does not exist``: pruned since it was seen) has nothing to list."""
        bad: dict[str, str] = {}
        for folder, outcome in result.items():
            if outcome == "OK":
                self.listed.add(folder)
            elif "file does not exist" in outcome:
                self.known.discard(folder)
            else:
                bad[folder] = outcome
        return bad

    def restarted(self) -> None:
        """A new rclone has no listings: everything known must be listed again."""
        self.listed.clear()
