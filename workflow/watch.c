/*
 * watch.c -- how a process learns that another one wrote the store.
 *
 * inotify on the store's directory: every commit by any process writes
 * the -wal file (or, without WAL, the database file), which raises
 * IN_MODIFY there; the watcher then asks SQLite whether the data changed
 * (PRAGMA data_version, db.c), so its own commits cost one cheap query.
 * A directory watch, not a file watch, keeps working when the -wal file
 * is deleted and created again (the last connection closes, a new owner
 * opens).  Where inotify is missing, tl__wf_watch_open returns -1 and the
 * callers look every 50 ms instead.
 */
#define _GNU_SOURCE
#include "wf_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int tl__wf_watch_open(const char *dbpath)
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
    if (inotify_add_watch(fd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void tl__wf_watch_drain(int fd)
{
    char buf[4096];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}
