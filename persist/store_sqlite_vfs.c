/*
 * store_sqlite_vfs.c -- "tl-unix", the SQLite VFS a store's connection uses: the
 * default unix VFS, with one change in how WAL frames reach the file.
 *
 * SQLite writes each WAL frame as two writes: its 24-byte header, then the
 * page right after it (wal.c, walWriteOneFrame).  That is one pwrite(2)
 * per header and one per page: half the system calls of a small commit.
 * Here a 24-byte write to a WAL file is held, and sent with the write that
 * follows it in one pwrite when that write starts where the header ends
 * (the frame's page, copied behind it into a reused buffer).
 *
 * Invariants:
 * - At most one header is held per WAL file, and only between that write
 *   and the next call on the file: any other call (a write elsewhere, a
 *   read, sync, truncate, size, lock, file control, close) first writes
 *   the held header where SQLite asked.  So every operation SQLite sees
 *   finds the bytes it wrote, in the order it wrote them; between the two
 *   writes of one frame SQLite does nothing else with the file, and it
 *   publishes a frame (the wal-index) only after its page is written.
 * - Everything else is the unix VFS itself: the real file, its locks and
 *   shared memory, called with the unix VFS's own handle.
 */
#include "store_sqlite_int.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 24 /* a WAL frame header (wal.c, WAL_FRAME_HDRSIZE) */

typedef struct tfile {
    sqlite3_file base;     /* our methods */
    sqlite3_file *real;    /* the unix VFS's file, right after this struct */
    int wal;               /* a WAL file: headers are held */
    int held;              /* a header is held */
    sqlite3_int64 held_at; /* its offset */
    unsigned char *buf;    /* the header, then room for a page */
    size_t cap;
} tfile;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs tl_vfs;

/* Writes the held header, if any, where SQLite asked. */
static int flush(tfile *f)
{
    if (!f->held)
        return SQLITE_OK;
    f->held = 0;
    return f->real->pMethods->xWrite(f->real, f->buf, HEADER, f->held_at);
}

static int t_close(sqlite3_file *p)
{
    tfile *f = (tfile *)p;
    int rc = flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int t_read(sqlite3_file *p, void *b, int n, sqlite3_int64 off)
{
    tfile *f = (tfile *)p;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, b, n, off);
}

/* Room for a header and n bytes behind it. */
static int room(tfile *f, size_t n)
{
    if (HEADER + n <= f->cap)
        return 1;
    unsigned char *nb = realloc(f->buf, HEADER + n);
    if (!nb)
        return 0;
    f->buf = nb;
    f->cap = HEADER + n;
    return 1;
}

static int t_write(sqlite3_file *p, const void *b, int n, sqlite3_int64 off)
{
    tfile *f = (tfile *)p;
    const sqlite3_io_methods *m = f->real->pMethods;
    if (f->held && off == f->held_at + HEADER && n > 0 && room(f, (size_t)n)) {
        memcpy(f->buf + HEADER, b, (size_t)n); /* the frame's page behind its header */
        f->held = 0;
        return m->xWrite(f->real, f->buf, HEADER + n, f->held_at);
    }
    int rc = flush(f);
    if (rc != SQLITE_OK)
        return rc;
    if (f->wal && n == HEADER && room(f, 0)) {
        memcpy(f->buf, b, HEADER);
        f->held = 1;
        f->held_at = off;
        return SQLITE_OK;
    }
    return m->xWrite(f->real, b, n, off);
}

/* The calls that only pass on, after the held header is written. */
#define PASS(call)                  \
    tfile *f = (tfile *)p;          \
    int rc = flush(f);              \
    return rc != SQLITE_OK ? rc : f->real->pMethods->call

static int t_truncate(sqlite3_file *p, sqlite3_int64 size) { PASS(xTruncate(f->real, size)); }
static int t_sync(sqlite3_file *p, int flags) { PASS(xSync(f->real, flags)); }
static int t_size(sqlite3_file *p, sqlite3_int64 *size) { PASS(xFileSize(f->real, size)); }
static int t_lock(sqlite3_file *p, int l) { PASS(xLock(f->real, l)); }
static int t_unlock(sqlite3_file *p, int l) { PASS(xUnlock(f->real, l)); }
static int t_check(sqlite3_file *p, int *out) { PASS(xCheckReservedLock(f->real, out)); }
static int t_fcntl(sqlite3_file *p, int op, void *arg) { PASS(xFileControl(f->real, op, arg)); }

static int t_sector(sqlite3_file *p)
{
    tfile *f = (tfile *)p;
    return f->real->pMethods->xSectorSize(f->real);
}

static int t_device(sqlite3_file *p)
{
    tfile *f = (tfile *)p;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* Shared memory belongs to the database file, never a WAL file: nothing
 * is held there. */
static int t_shm_map(sqlite3_file *p, int pg, int sz, int extend, void volatile **out)
{
    tfile *f = (tfile *)p;
    return f->real->pMethods->xShmMap(f->real, pg, sz, extend, out);
}

static int t_shm_lock(sqlite3_file *p, int off, int n, int flags)
{
    tfile *f = (tfile *)p;
    return f->real->pMethods->xShmLock(f->real, off, n, flags);
}

static void t_shm_barrier(sqlite3_file *p)
{
    tfile *f = (tfile *)p;
    f->real->pMethods->xShmBarrier(f->real);
}

static int t_shm_unmap(sqlite3_file *p, int del)
{
    tfile *f = (tfile *)p;
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int t_fetch(sqlite3_file *p, sqlite3_int64 off, int n, void **out)
{
    PASS(xFetch(f->real, off, n, out));
}

static int t_unfetch(sqlite3_file *p, sqlite3_int64 off, void *ptr)
{
    PASS(xUnfetch(f->real, off, ptr));
}

static sqlite3_io_methods methods[4]; /* by the real file's iVersion */

static void init_methods(void)
{
    for (int v = 1; v <= 3; v++) {
        sqlite3_io_methods *m = &methods[v];
        *m = (sqlite3_io_methods){v, t_close, t_read, t_write, t_truncate, t_sync, t_size,
                                  t_lock, t_unlock, t_check, t_fcntl, t_sector, t_device,
                                  NULL, NULL, NULL, NULL, NULL, NULL};
        if (v >= 2) {
            m->xShmMap = t_shm_map;
            m->xShmLock = t_shm_lock;
            m->xShmBarrier = t_shm_barrier;
            m->xShmUnmap = t_shm_unmap;
        }
        if (v >= 3) {
            m->xFetch = t_fetch;
            m->xUnfetch = t_unfetch;
        }
    }
}

static int t_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags, int *oflags)
{
    (void)vfs;
    tfile *f = (tfile *)p;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, oflags);
    const sqlite3_io_methods *rm = f->real->pMethods;
    if (!rm) /* the open failed and left nothing to close */
        return rc;
    int v = rm->iVersion < 1 ? 1 : rm->iVersion > 3 ? 3 : rm->iVersion;
    f->base.pMethods = &methods[v];
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    return rc;
}

/* The VFS-level calls, with the unix VFS's own handle. */
static int t_delete(sqlite3_vfs *v, const char *n, int sync)
{
    (void)v;
    return real_vfs->xDelete(real_vfs, n, sync);
}

static int t_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
    (void)v;
    return real_vfs->xAccess(real_vfs, n, flags, out);
}

static int t_full(sqlite3_vfs *v, const char *n, int len, char *out)
{
    (void)v;
    return real_vfs->xFullPathname(real_vfs, n, len, out);
}

static int t_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int t_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return real_vfs->xSleep(real_vfs, us);
}

static int t_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int t_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0;
}

static int t_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static void *t_dlopen(sqlite3_vfs *v, const char *n)
{
    (void)v;
    return real_vfs->xDlOpen(real_vfs, n);
}

static void t_dlerror(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    real_vfs->xDlError(real_vfs, n, out);
}

static void (*t_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return real_vfs->xDlSym(real_vfs, h, sym);
}

static void t_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    real_vfs->xDlClose(real_vfs, h);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered;

static void do_register(void)
{
    real_vfs = sqlite3_vfs_find("unix");
    if (!real_vfs || real_vfs->iVersion < 2 || !real_vfs->xCurrentTimeInt64 ||
        !real_vfs->xDlOpen)
        return; /* not the unix VFS we know: stores use the default */
    init_methods();
    tl_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(tfile) + real_vfs->szOsFile,
        .mxPathname = real_vfs->mxPathname,
        .zName = TL__SQLITE_VFS,
        .xOpen = t_open,
        .xDelete = t_delete,
        .xAccess = t_access,
        .xFullPathname = t_full,
        .xDlOpen = t_dlopen,
        .xDlError = t_dlerror,
        .xDlSym = t_dlsym,
        .xDlClose = t_dlclose,
        .xRandomness = t_random,
        .xSleep = t_sleep,
        .xCurrentTime = t_time,
        .xGetLastError = t_lasterr,
        .xCurrentTimeInt64 = t_time64,
    };
    registered = sqlite3_vfs_register(&tl_vfs, 0) == SQLITE_OK;
}

const char *tl__sqlite_vfs(void)
{
    pthread_once(&once, do_register);
    return registered ? TL__SQLITE_VFS : NULL;
}
