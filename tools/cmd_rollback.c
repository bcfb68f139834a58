/*
 * cmd_rollback.c -- `tasklet rollback DB --to N`: makes checkpoint N the
 * newest, for a store whose newer checkpoints are damaged (issue: a
 * damaged newest checkpoint is not the end).
 *
 *   owner lock (flock DB-lock: no process may own the store meanwhile)
 *     -> BEGIN IMMEDIATE -> N exists -> N verifies (verify's checks)
 *     -> DELETE the checkpoints > N and the chunk rows with ckpt > N
 *     -> COMMIT
 *
 * Rows with ckpt > N are read by no checkpoint <= N, so every checkpoint
 * up to N reads exactly what it read before; the next checkpoint the
 * owner writes gets id N + 1 and builds on N.  Any failure rolls back:
 * the store is untouched.  Never silent: it says what it removed.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* The owner's lock, held while we rewrite history: -1 (and a message)
 * when a running process owns the store. */
static int lock_store(const char *db)
{
    char path[4096];
    snprintf(path, sizeof path, "%s-lock", db);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_complain("rollback: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        cli_complain("rollback: %s is owned by a running process (it holds %s); stop it "
                     "first", db, path);
        close(fd);
        return -1;
    }
    return fd;
}

static int64_t count_sql(cli_store *st, const char *sql, int64_t n)
{
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, n);
        if (sqlite3_step(s) == SQLITE_ROW)
            v = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
    return v;
}

static int delete_newer(cli_store *st, int64_t n)
{
    static const char *const sql[] = {"DELETE FROM chunks WHERE ckpt > ?1",
                                      "DELETE FROM checkpoints WHERE id > ?1"};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(st->db, sql[i], -1, &s, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(s, 1, n);
            rc = sqlite3_step(s);
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
            cli_complain("rollback: %s", sqlite3_errmsg(st->db));
            return -1;
        }
    }
    return 0;
}

static void report(const cli_opts *o, int64_t n, int64_t ckpts, int64_t rows)
{
    if (o->json) {
        json_t *r = json_object();
        json_object_set_new(r, "newest", json_integer(n));
        json_object_set_new(r, "removed_checkpoints", json_integer(ckpts));
        json_object_set_new(r, "removed_chunks", json_integer(rows));
        cli_json_print(r);
    } else {
        printf("rolled back to checkpoint %" PRId64 ": removed %" PRId64 " newer checkpoint%s "
               "and %" PRId64 " chunk row%s\n", n, ckpts, ckpts == 1 ? "" : "s", rows,
               rows == 1 ? "" : "s");
    }
}

static int rollback(cli_store *st, const cli_opts *o)
{
    cli_err e = {{0}, {0}};
    int64_t n = o->to;
    if (cli_store_check_version(st, &e) < 0) {
        cli_print_err(&e);
        return CLI_EXIT_FAIL;
    }
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("rollback: %s", sqlite3_errmsg(st->db));
        return CLI_EXIT_FAIL;
    }
    if (count_sql(st, "SELECT count(*) FROM checkpoints WHERE id = ?1", n) != 1) {
        cli_complain("rollback: the store has no checkpoint %" PRId64 " (see 'tasklet "
                     "checkpoints')", n);
        return CLI_EXIT_FAIL;
    }
    if (cli_ckpt_sound(st, o, n) != 0) {
        cli_complain("rollback: checkpoint %" PRId64 " does not verify; nothing was changed", n);
        return CLI_EXIT_FAIL;
    }
    int64_t ckpts = count_sql(st, "SELECT count(*) FROM checkpoints WHERE id > ?1", n);
    int64_t rows = count_sql(st, "SELECT count(*) FROM chunks WHERE ckpt > ?1", n);
    if (ckpts < 0 || rows < 0 || delete_newer(st, n) < 0)
        return CLI_EXIT_FAIL;
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cli_complain("rollback: %s", sqlite3_errmsg(st->db));
        return CLI_EXIT_FAIL;
    }
    report(o, n, ckpts, rows);
    return CLI_EXIT_OK;
}

int cli_cmd_rollback(const cli_opts *o)
{
    if (!o->has_to || o->to < 1) {
        cli_complain("rollback: --to N with N >= 1 is required (see 'tasklet rollback --help')");
        return CLI_EXIT_USAGE;
    }
    int rc = cli_check_file(o->db, true);
    if (rc != CLI_EXIT_OK)
        return rc;
    int lock = lock_store(o->db);
    if (lock < 0)
        return CLI_EXIT_FAIL;
    cli_store st;
    rc = cli_store_open(&st, o->db, true);
    if (rc == CLI_EXIT_OK) {
        rc = rollback(&st, o);
        cli_store_close(&st); /* rolls back what is not committed */
    }
    close(lock);
    return rc;
}
