/*
 * cmd_backup.c -- `tasklet backup DB OUT`: a consistent copy of a store,
 * taken with SQLite's online backup API while its owner may be running.
 *
 * Why not cp: in WAL mode most committed checkpoints can sit in DB-wal
 * (after a kill -9, nearly all of them); a copy of DB alone restores as an
 * older store or as a fresh start.  The backup reads DB and its WAL as one
 * snapshot, page by page, restarting by itself if the owner writes
 * meanwhile, and writes OUT as one self-contained file (no -wal left).
 *
 * Invariants: OUT never exists beforehand (we do not overwrite); it is
 * created mode 0600, like a store; on any failure it is removed.  The
 * source is opened read-only and only read.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGES_PER_STEP 256 /* then let the owner write again */

/* Creates OUT, empty and private, refusing to replace anything. */
static int create_out(const char *out)
{
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_complain("backup: cannot create %s: %s%s", out, strerror(errno),
                     errno == EEXIST ? " (backup never overwrites a file)" : "");
        return CLI_EXIT_USAGE;
    }
    close(fd);
    return CLI_EXIT_OK;
}

static int copy_pages(sqlite3 *src, sqlite3 *dst, const char *out)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
        cli_complain("backup: %s: %s", out, sqlite3_errmsg(dst));
        return CLI_EXIT_FAIL;
    }
    int rc;
    do {
        rc = sqlite3_backup_step(b, PAGES_PER_STEP);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            sqlite3_sleep(5);
    } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    int pages = sqlite3_backup_pagecount(b);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        cli_complain("backup: copying into %s: %s", out, sqlite3_errstr(rc));
        return CLI_EXIT_FAIL;
    }
    return pages >= 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* The newest checkpoint id in the copy, to report (0 if none). */
static int64_t newest_ckpt(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM checkpoints", -1, &s, NULL)
            == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return id;
}

/* Folds the copy's journal into its file: OUT stands alone. */
static int settle_out(sqlite3 *dst, const char *out)
{
    if (sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("backup: %s: %s", out, sqlite3_errmsg(dst));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static int backup(cli_store *st, const char *out, const cli_opts *o)
{
    sqlite3 *dst = NULL;
    int rc = create_out(out);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (sqlite3_open_v2(out, &dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        cli_complain("backup: cannot open %s: %s", out, sqlite3_errmsg(dst));
        rc = CLI_EXIT_FAIL;
    } else {
        rc = copy_pages(st->db, dst, out);
    }
    if (rc == CLI_EXIT_OK)
        rc = settle_out(dst, out);
    int64_t ckpt = rc == CLI_EXIT_OK ? newest_ckpt(dst) : 0;
    sqlite3_close_v2(dst);
    if (rc != CLI_EXIT_OK) {
        unlink(out);
        return rc;
    }
    struct stat sb;
    int64_t bytes = stat(out, &sb) == 0 ? (int64_t)sb.st_size : -1;
    if (o->json) {
        json_t *j = json_object();
        json_object_set_new(j, "out", json_string(out));
        json_object_set_new(j, "checkpoint", json_integer(ckpt));
        json_object_set_new(j, "bytes", json_integer(bytes));
        cli_json_print(j);
    } else {
        printf("backup: %s: checkpoint %" PRId64 ", %" PRId64 " bytes\n", out, ckpt, bytes);
    }
    return CLI_EXIT_OK;
}

int cli_cmd_backup(const cli_opts *o)
{
    cli_store st;
    int rc = cli_store_open(&st, o->db, false);
    if (rc != CLI_EXIT_OK)
        return rc;
    /* the backup takes its own read snapshot, page by page */
    sqlite3_exec(st.db, "COMMIT", NULL, NULL, NULL);
    rc = backup(&st, o->arg, o);
    cli_store_close(&st);
    return rc;
}
