"""Which user an app's process runs as.

An agent running as root never runs apps as root by default: an app runs as its spec's ``user``, else
as AGENT_APP_USER (``nobody``), so it cannot read the agent's token, its settings or the
/proc/<pid>/environ of any daemon. An agent that is not root cannot switch users: its apps run as
itself, and a ``user`` naming anyone else is refused.

``user`` is ``NAME`` or ``UID``, optionally followed by ``:GROUP`` or ``:GID``. Without a group the
user's primary group is taken; the supplementary groups are the user's own (as login(1) sets them).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DEFAULT_APP_USER = "nobody"  # in every Debian/Ubuntu base system (base-passwd), owns no files, cannot log in
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
_ID = r"[0-9]{1,10}"
USER_SYNTAX = re.compile(rf"(?P<user>{_NAME}|{_ID})(?::(?P<group>{_NAME}|{_ID}))?")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
IDENTITY_ENV = ("USER", "LOGNAME", "HOME")


class UserError(ValueError):
    """A user that cannot be used; the message names the value."""


@dataclass(frozen=True)
class RunAs:
    """The identity a process switches to at exec."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: Optional[str]  # None: a uid without an entry in the user database
    home: Optional[str]

    def describe(self) -> str:
        return f"{self.name or self.uid} (uid {self.uid}, gid {self.gid})"

    def identity_env(self) -> dict[str, Optional[str]]:
        """USER, LOGNAME and HOME of this user (None: unset), as login(1) and systemd's User= set them."""
        return {"USER": self.name, "LOGNAME": self.name, "HOME": self.home}


def check_user(value: object) -> str:
    """The ``user`` value in canonical form (a string); ValueError when its syntax is wrong."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not USER_SYNTAX.fullmatch(text):
        raise ValueError(f"expected a user name or uid, optionally followed by :group or :gid, got {value!r}")
    for part in text.split(":"):
        if part.isdigit() and int(part) > MAX_ID:
            raise ValueError(f"{part} is not a valid uid or gid (at most {MAX_ID}), got {value!r}")
    return text


def resolve(value: str) -> RunAs:
    """The uid, gid and groups ``value`` names on this host; UserError when they do not exist."""
    match = USER_SYNTAX.fullmatch(check_user(value))
    assert match is not None
    user, group = match.group("user"), match.group("group")
    entry = _passwd_entry(user)
    if entry is None and not user.isdigit():
        raise UserError(f"{value!r}: no such user on this host")
    if entry is None and group is None:
        raise UserError(f"{value!r}: uid {user} is not in the user database, so it has no group: give uid:gid")
    uid = entry.pw_uid if entry is not None else int(user)
    gid = _group_id(value, group) if group is not None else entry.pw_gid  # type: ignore[union-attr]
    groups = tuple(os.getgrouplist(entry.pw_name, gid)) if entry is not None else (gid,)
    return RunAs(uid, gid, groups, entry.pw_name if entry else None, entry.pw_dir if entry else None)


def _passwd_entry(user: str) -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return None


def _group_id(value: str, group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UserError(f"{value!r}: no such group {group!r} on this host") from None


def agent_is_root() -> bool:
    return os.geteuid() == 0


def run_as(user: Optional[str], default_user: str) -> Optional[RunAs]:
    """Who an app with spec ``user`` runs as; None: as the agent itself. UserError when it cannot be."""
    if agent_is_root():
        return resolve(user or default_user)
    if user is None:
        return None
    target = resolve(user)
    group_given = ":" in user
    if target.uid != os.geteuid() or (group_given and target.gid != os.getegid()):
        me = _passwd_entry(str(os.geteuid()))
        own = me.pw_name if me is not None else str(os.geteuid())
        raise UserError(
            f"{user!r}: the agent runs as {own} (uid {os.geteuid()}, gid {os.getegid()}), not as root, so its apps "
            f"run as {own} too: leave user unset or set it to {own}"
        )
    return None


def numeric_ids(user: Optional[str]) -> Optional[tuple[int, int]]:
    """(uid, gid) of a ``UID:GID`` user, else None: a container resolves names in its own image."""
    match = USER_SYNTAX.fullmatch(user or "")
    if match is None or not match.group("user").isdigit() or not (match.group("group") or "").isdigit():
        return None
    return int(match.group("user")), int(match.group("group"))


def _path_folders(release: Path, top: Path) -> list[Path]:
    folders = [release.parent, *release.parent.parents]
    return folders[: folders.index(top) + 1] if top in folders else []


def is_open_to(release: Path, top: Optional[Path], user: RunAs) -> bool:
    """Whether share_release and open_path_to have nothing left to do for ``user`` (a few stat calls: a
    restart checks it on the event loop, and does the work in a thread only when there is some)."""
    try:
        if not _shared_with(release, user.gid):
            return False
        if top is None or user.uid == os.geteuid():
            return True
        for folder in _path_folders(release, top):
            entries = _read_acl(folder)
            if not (entries.get((_USER, user.uid), 0) & _SEARCH and entries.get((_MASK, _NO_ID), 0) & _SEARCH):
                return False
    except OSError:
        return False
    return True


def open_path_to(release: Path, top: Path, uid: int) -> None:
    """Let ``uid`` pass through the folders from ``top`` down to ``release`` (search only, never list them).

    The agent's folders are 0750: an app running as another user could use paths relative to its release
    (its working directory) but no absolute one, and interpreters make the script's path absolute. A POSIX
    ACL entry ``user:<uid>:--x`` on each folder lets that user alone through, and leaves the modes as they are.
    """
    for folder in _path_folders(release, top):
        grant_search(folder, uid)


# POSIX ACLs as the kernel stores them in the system.posix_acl_access attribute (acl(5), linux/posix_acl_xattr.h).
ACL_XATTR = "system.posix_acl_access"
_ACL_HEADER, _ACL_ENTRY, _ACL_VERSION = struct.Struct("<I"), struct.Struct("<HHI"), 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID, _SEARCH = 0xFFFFFFFF, 0o1


def grant_search(folder: Path, uid: int) -> None:
    """Add ``user:<uid>:--x`` to folder's ACL; a file system without ACLs gets search for others instead."""
    entries = _read_acl(folder)
    if entries.get((_USER, uid), 0) & _SEARCH and entries.get((_MASK, _NO_ID), 0) & _SEARCH:
        return
    entries[(_USER, uid)] = entries.get((_USER, uid), 0) | _SEARCH
    entries[(_MASK, _NO_ID)] = entries.get((_MASK, _NO_ID), entries[(_GROUP_OBJ, _NO_ID)]) | _SEARCH
    blob = _ACL_HEADER.pack(_ACL_VERSION) + b"".join(
        _ACL_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in sorted(entries.items())
    )
    try:
        os.setxattr(folder, ACL_XATTR, blob, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        os.chmod(folder, stat.S_IMODE(folder.lstat().st_mode) | 0o001)


def _read_acl(folder: Path) -> dict[tuple[int, int], int]:
    """(tag, id) -> permission bits of folder's access ACL; its mode's three entries when it has none."""
    try:
        blob = os.getxattr(folder, ACL_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        mode = stat.S_IMODE(folder.lstat().st_mode)
        return {(_USER_OBJ, _NO_ID): mode >> 6 & 7, (_GROUP_OBJ, _NO_ID): mode >> 3 & 7, (_OTHER, _NO_ID): mode & 7}
    entries = {}
    for offset in range(_ACL_HEADER.size, len(blob) - _ACL_ENTRY.size + 1, _ACL_ENTRY.size):
        tag, perm, ident = _ACL_ENTRY.unpack_from(blob, offset)
        entries[(tag, ident)] = perm
    return entries


def share_release(release: Path, gid: int) -> None:
    """Let group ``gid`` read and run the release, never write it; the agent stays its owner.

    Bottom-up, the release directory itself last: once it carries the group, everything in it does, so
    an interrupted pass is redone in full by the next start.
    """
    if _shared_with(release, gid):
        return
    for root, dirs, files in os.walk(release, topdown=False):
        for name in (*files, *dirs):
            _share(Path(root) / name, gid)
    _share(release, gid)


def open_release_to_any_user(release: Path) -> None:
    """Let whatever user a container's image runs as read and run a mounted release, never write it.

    The host path stays closed: the folders above the release are private to the agent, and only the
    container sees the release, through its bind mount. Bottom-up, the release itself last, as above.
    """
    if stat.S_IMODE(release.lstat().st_mode) & 0o005 == 0o005:
        return
    for root, dirs, files in os.walk(release, topdown=False):
        for name in (*files, *dirs):
            _open_to_others(Path(root) / name)
    _open_to_others(release)


def _open_to_others(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    os.chmod(path, mode | (mode & 0o500) >> 6)


def _shared_with(path: Path, gid: int) -> bool:
    info = path.lstat()
    return info.st_gid == gid and stat.S_IMODE(info.st_mode) & 0o070 == (stat.S_IMODE(info.st_mode) & 0o500) >> 3


def _share(path: Path, gid: int) -> None:
    info = path.lstat()
    os.chown(path, -1, gid, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    # chown clears setuid/setgid bits; artifacts never carry them anyway.
    os.chmod(path, (mode & ~0o070) | (mode & 0o500) >> 3)
