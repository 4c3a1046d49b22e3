# SPDX-License-Identifier: MIT
"""``vnetd run``: event sources wake one reconcile loop that keeps the host as declared.

Concurrency contract: one thread (the main thread) owns all state and does every
pass; the state-directory watcher, libvirt's event loop and signal handlers only
post wake-ups (``Wakeup.post``); netlink notifications are read by the main thread
itself, so the cache it plans from is never mutated concurrently.
"""
