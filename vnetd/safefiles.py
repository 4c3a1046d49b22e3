# SPDX-License-Identifier: MIT
"""Paths vnetd creates outside its state directory: pidfile, log file, control socket,
instance lock, and the checks on the state directory's parents.

SPEC section 5: vnetd never changes or removes a file or directory it did not
create, and never follows a symlink it did not expect. vnetd runs as root, so a
path under somebody else's control is a way to make root overwrite any file (a
symlink ``/tmp/vnetd.pid -> /etc/shadow``), or to swap a file between a check and
its use. Hence:

* files are opened with ``O_NOFOLLOW | O_CLOEXEC`` (and ``O_NONBLOCK``, so that a
  FIFO planted at the path cannot hang the start), must then be regular files with
  one link (a hard link to another file would be written through), and must sit in
  a directory owned by root that neither group nor others can write;
* a directory vnetd needs (``/run/vnetd``) is created 0700 when missing, and used
  as it is when root owns it and neither group nor others can write it; it is
  refused otherwise, never chmod-ed;
* a socket path is reused only when it is a stale socket (nobody accepts on it).

Ancestors of the state directory follow sshd's StrictModes with one exception
(see ``insecure_ancestor``).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from vnetd.errors import StartupError


def _writable_by_others(st: os.stat_result) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    who = [w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit]
    return f"writable by {' and '.join(who)} (mode {mode:04o})" if who else None


def unsafe_directory(path: str, st: os.stat_result) -> str | None:
    """Why a directory must not hold what root creates, or None: it must be a real
    directory, owned by root, and writable by nobody else."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    problems = []
    if st.st_uid != 0:
        problems.append(f"owned by uid {st.st_uid}, not root")
    if (writable := _writable_by_others(st)) is not None:
        problems.append(writable)
    return f"{path} is {' and '.join(problems)}" if problems else None


def check_parent(path: str, what: str) -> str:
    """The directory that will hold ``path``, after checking that only root can change it."""
    parent = os.path.dirname(os.path.abspath(path)) or "/"
    try:
        st = os.stat(parent)  # a symlinked parent (/var/run -> /run) is judged by its target
    except OSError as exc:
        raise StartupError(f"{what} {path}: cannot use {parent}: {exc.strerror}") from None
    problem = unsafe_directory(parent, st)
    if problem is not None:
        raise StartupError(f"refusing {what} {path}: {problem}; anyone who can write there could make vnetd "
                           "(root) overwrite another file; use a directory only root can write (e.g. /run, "
                           "/var/log)")
    return parent


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or special file"


def check_file(path: str, what: str) -> None:
    """Refuse now what ``open_private`` would refuse later (used before detaching, so
    that the refusal reaches the terminal)."""
    check_parent(path, what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise StartupError(f"refusing {what} {path}: it is a symlink; vnetd does not follow it")
    if not stat.S_ISREG(st.st_mode):
        raise StartupError(f"refusing {what} {path}: it is {_kind(st)}, not a regular file")
    if st.st_nlink != 1:
        raise StartupError(f"refusing {what} {path}: it has {st.st_nlink} hard links (writing it would change "
                           "another file)")


def open_private(path: str, what: str, flags: int, mode: int = 0o644) -> int:
    """Open (or create) a regular file for root, without following a symlink at ``path``."""
    check_parent(path, what)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StartupError(f"refusing {what} {path}: it is a symlink; vnetd does not follow it") from None
        if exc.errno == errno.EISDIR:
            raise StartupError(f"refusing {what} {path}: it is a directory, not a regular file") from None
        raise StartupError(f"cannot open {what} {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"it is {_kind(st)}, not a regular file"
    elif st.st_nlink != 1:
        problem = f"it has {st.st_nlink} hard links (writing it would change another file)"
    if problem is not None:
        os.close(fd)
        raise StartupError(f"refusing {what} {path}: {problem}")
    os.set_blocking(fd, True)
    return fd


def private_directory(path: str, what: str) -> None:
    """Make sure ``path`` is a directory only root can change: create it (0700) when
    missing, refuse it when it exists otherwise. Never changes an existing one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        check_parent(path, what)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made by another process meanwhile: judged below
        except OSError as exc:
            raise StartupError(f"cannot create {what} {path}: {exc.strerror}") from None
        st = os.lstat(path)
    problem = unsafe_directory(path, st)
    if problem is not None:
        raise StartupError(f"refusing {what} {path}: {problem}; vnetd puts root-only files there and never "
                           "changes a directory it did not create: use another directory, or fix it by hand")


def remove_stale_socket(path: str, what: str) -> None:
    """Remove ``path`` only if it is a socket nobody listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"refusing {what} {path}: the path exists and is {_kind(st)}; vnetd removes only a stale "
                           "socket of its own (choose another --socket, or remove it by hand)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # stale: its daemon is gone
    except OSError as exc:
        raise StartupError(f"refusing {what} {path}: cannot tell whether it is in use ({exc.strerror or exc})"
                           ) from None
    else:
        raise StartupError(f"refusing {what} {path}: another process is listening on it (another vnetd?); "
                           "choose another --socket") from None
    finally:
        probe.close()
    os.unlink(path)


def _or_you() -> str:
    euid = os.geteuid()
    return f" or you (uid {euid})" if euid else ""


def insecure_ancestor(path: str) -> str | None:
    """The first ancestor of ``path`` (up to /) that someone other than root could change.

    As sshd's StrictModes: every directory above the state directory must be owned
    by root (or by the user running vnetd: for the daemon that is root; a user
    checking a copy of their own files can change nothing with them) and not
    writable by group or others, or whoever can write it can put
    another directory in the state directory's place. One exception: a sticky
    directory (``/tmp``, mode 1777) is accepted, because there only the owner of an
    entry can rename or remove it, and the entry below is itself checked to be
    root's. Both the path as written and the one its symlinks lead to are checked.
    """
    seen: set[str] = set()
    trusted = {0, os.geteuid()}
    for start in (os.path.abspath(path), os.path.realpath(path)):
        current = start
        while True:
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
            if current in seen:
                continue
            seen.add(current)
            try:
                st = os.stat(current)
            except OSError as exc:
                return f"{current}: {exc.strerror}"
            if st.st_uid not in trusted:
                return f"{current} is owned by uid {st.st_uid}, not root" + _or_you()
            sticky = bool(st.st_mode & stat.S_ISVTX)
            if not sticky and (writable := _writable_by_others(st)) is not None:
                return f"{current} is {writable}"
    # a symlink on the way must be root's too (its directory was checked above)
    current = os.path.abspath(path)
    while current != os.path.dirname(current):
        try:
            lst = os.lstat(current)
        except OSError:
            break
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in trusted:
            return f"{current} is a symlink owned by uid {lst.st_uid}, not root" + _or_you()
        current = os.path.dirname(current)
    return None
