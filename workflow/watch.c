/*
 * watch.c -- how a process learns that another one wrote the store.
 *
 * inotify on the store's directory: every commit by any process writes
 * the -wal file (or, without WAL, the database file), which raises
 * IN_MODIFY there; the watcher then asks SQLite whether the data changed
 * (PRAGMA data_version, db.c).  The owner's engine watches with `others`
 * set: not IN_MODIFY, which its own commits would raise at every page
 * they write (a kernel event per pwrite, then a read and a query per
 * round), but IN_CLOSE_WRITE, which every other writer raises once it is
 * done: a poster (client.c) closes its connection after its commit, and
 * a process that dies has its files closed by the kernel.  So the engine
 * looks at the store only after an event.  A directory watch, not a file
 * watch, keeps working when the -wal file is deleted and created again
 * (the last connection closes, a new owner opens).  Where inotify is
 * missing, tl__wf_watch_open returns -1 and the callers look every 50 ms
 * instead.  The busy handler (tl__wf_busy) keeps
 * the wait for the store's write lock as short as the lock is held.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int tl__wf_watch_open(const char *dbpath, int others)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dbpath);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -1;
    uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | (others ? 0 : IN_MODIFY);
    if (inotify_add_watch(fd, dir, mask) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms ... between
 * tries, so a post that meets the owner's commit (or a commit that meets a
 * post) waited 8 to 30 ms for a lock held for well under one; this one
 * tries again after 50 us, doubling up to 1 ms, for at most ud ms. */
static int busy_wait(void *ud, int n)
{
    int64_t limit_us = (int64_t)(intptr_t)ud * 1000;
    int64_t spent = n < 5 ? 50 * ((1 << n) - 1) : 1550 + (int64_t)(n - 5) * 1000;
    if (spent >= limit_us)
        return 0;
    usleep(n < 5 ? 50u << n : 1000u);
    return 1;
}

void tl__wf_busy(void *db, int ms)
{
    sqlite3_busy_handler(db, busy_wait, (void *)(intptr_t)ms);
}

int tl__wf_watch_drain(int fd)
{
    char buf[4096];
    int any = 0;
    while (read(fd, buf, sizeof buf) > 0)
        any = 1;
    return any;
}
