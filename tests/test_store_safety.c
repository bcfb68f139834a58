/*
 * test_store_safety.c -- what a store meets besides crashes (issue 11):
 * foreign and garbage files left byte for byte untouched, directories,
 * FIFOs, link loops and unreadable files each with their own error, files
 * created private, ownership held by an OS lock that follows the process
 * (another host name, two stores in one process, a reused pid), chunk
 * rows of no checkpoint, and checkpoint ids at INT64_MAX.
 *
 * Real files in a temporary directory, real child processes (fork, kill
 * -9, a UTS namespace for another host name, setuid for a user without
 * permission; the last two need root, which CI has).
 */
#define _GNU_SOURCE /* unshare, sethostname */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tasklet.h"
#define STORETEST_PREFIX "tl-safe"
#include "storetest.h"

static int setup_umask(void **state)
{
    umask(022); /* the modes checked are the library's, not the umask's */
    return setup(state);
}

typedef struct { tl_chan *in; tl_value v; } rx_t;
static const tl_field rx_fields[] = {TL_FIELD(rx_t, in, TL_T_CHAN), TL_FIELD(rx_t, v, TL_T_VALUE)};

static tl_status receiver(tl_frame *f, void *locals)
{
    rx_t *L = locals;
    TL_BEGIN(f);
    TL_RECV(f, L->in, L->v);
    TL_END(f);
}
static const tl_func receiver_fn = {"safety.receiver", 1, receiver, sizeof(rx_t), rx_fields,
                                    TL_COUNTOF(rx_fields), NULL};

static tl_runtime *new_rt(void)
{
    tl_runtime *rt;
    assert_int_equal(tl_runtime_new(NULL, &rt), TL_OK);
    assert_int_equal(tl_register(rt, &receiver_fn), TL_OK);
    return rt;
}

/* n receivers blocked on a new channel (which the runtime keeps alive). */
static void spawn_receivers(tl_runtime *rt, int n)
{
    tl_chan *ch;
    assert_int_equal(tl_chan_new(rt, 0, &ch), TL_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(tl_spawn(rt, &receiver_fn, &(rx_t){.in = ch}, sizeof(rx_t), NULL), TL_OK);
    assert_int_equal(tl_run_steps(rt, (uint64_t)n, NULL), TL_OK);
    tl_chan_release(ch);
}

static tl_store *open_attached(tl_runtime *rt, int flags)
{
    return attach_at(rt, flags);
}

/* The whole file, for byte-for-byte comparisons; *n its size. */
static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static bool exists(const char *suffix)
{
    char p[160];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return access(p, F_OK) == 0;
}

/* Opening path fails with code and a message containing want, and leaves
 * the file's bytes as they were and no side file behind. */
static void expect_refused_untouched(int code, const char *want)
{
    size_t n0, n1;
    unsigned char *before = slurp(path, &n0);
    tl_store *st;
    assert_int_equal(tl_store_open(path, 0, &st), code);
    if (!strstr(tl_store_errmsg(st), want))
        fail_msg("expected \"%s\" in: %s", want, tl_store_errmsg(st));
    tl_store_close(st);
    unsigned char *after = slurp(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_false(exists("-wal"));
    assert_false(exists("-lock"));
    free(before);
    free(after);
}

/* ---- item 1: foreign files are never modified ---- */

static void test_foreign_sqlite_file_untouched(void **state)
{
    (void)state;
    sql("PRAGMA application_id = 42; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);");
    expect_refused_untouched(TL_ENOTSTORE, "another application");
    assert_int_equal(query("SELECT count(*) FROM t"), 2);
    /* in WAL mode of its own, too */
    sql("PRAGMA journal_mode=WAL; INSERT INTO t VALUES (3);");
    expect_refused_untouched(TL_ENOTSTORE, "another application");
    /* read-only: the same refusal */
    tl_store *st;
    assert_int_equal(tl_store_open(path, TL_STORE_READONLY, &st), TL_ENOTSTORE);
    tl_store_close(st);
}

static void write_bytes(const char *p, size_t n, unsigned seed)
{
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 7919 + seed) & 0xff), f);
    fclose(f);
}

static void test_garbage_files_refused(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 100, 511, 512, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        write_bytes(path, sizes[i], (unsigned)i);
        expect_refused_untouched(TL_ENOTSTORE, "not a SQLite database");
    }
    /* an empty file is a new store */
    write_bytes(path, 0, 0);
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt, 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- item 8: each kind of not-a-store with its own message ---- */

static void expect_open_error(const char *p, int code, const char *want)
{
    tl_store *st;
    assert_int_equal(tl_store_open(p, 0, &st), code);
    if (!strstr(tl_store_errmsg(st), want))
        fail_msg("%s: expected \"%s\" in: %s", p, want, tl_store_errmsg(st));
    tl_store_close(st);
}

static void test_not_files(void **state)
{
    (void)state;
    alarm(60); /* a FIFO used to block the open for ever */
    char p[160], q[160];
    expect_open_error(dir, TL_ENOTSTORE, "is a directory");
    snprintf(p, sizeof p, "%s/fifo", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    expect_open_error(p, TL_ENOTSTORE, "not a regular file");
    snprintf(p, sizeof p, "%s/loop-a", dir);
    snprintf(q, sizeof q, "%s/loop-b", dir);
    assert_int_equal(symlink(q, p), 0);
    assert_int_equal(symlink(p, q), 0);
    expect_open_error(p, TL_ENOTSTORE, "symbolic links");
    snprintf(p, sizeof p, "%s/missing/app.db", dir);
    expect_open_error(p, TL_EIO, "cannot create");
    alarm(0);
    assert_string_equal(tl_strerror(TL_ENOTSTORE),
                        "not a libtasklet store (another file, or not a file)");
}

/* A user who may not read the file (mode 000; root may read anything, so
 * a child process drops to another uid first). */
static void test_unreadable_file(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt, 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
    assert_int_equal(chmod(path, 0), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (getuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(10);
        if (getuid() == 0)
            _exit(11);
        tl_store *s2;
        int rc = tl_store_open(path, 0, &s2);
        int ok = rc == TL_EPERM && strstr(tl_store_errmsg(s2), "permission denied");
        tl_store_close(s2);
        rc = tl_store_open(path, TL_STORE_READONLY, &s2);
        ok = ok && rc == TL_EPERM;
        tl_store_close(s2);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- item 3: private files by default ---- */

static void expect_mode(const char *suffix, unsigned mode)
{
    char p[160];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    assert_int_equal(stat(p, &sb), 0);
    if ((sb.st_mode & 0777) != mode)
        fail_msg("%s: mode %03o, expected %03o", p, sb.st_mode & 0777, mode);
}

static void check_modes(int flags, unsigned mode)
{
    tl_runtime *rt = new_rt();
    spawn_receivers(rt, 10);
    tl_store *st = open_attached(rt, flags);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    expect_mode("", mode); /* while open: the WAL and its index exist */
    expect_mode("-wal", mode);
    expect_mode("-shm", mode);
    expect_mode("-lock", mode);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_files_private(void **state)
{
    (void)state;
    check_modes(0, 0600);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -f %s %s-wal %s-shm %s-lock", path, path, path, path);
    assert_int_equal(system(cmd), 0);
    check_modes(TL_STORE_GROUP_READ, 0640);
}

/* ---- item 2: ownership that follows the process ---- */

/* A child that owns the store (after changing its host name, if host is
 * not NULL) until it is killed. */
static pid_t spawn_owner(const char *host)
{
    int ready[2];
    char c = 0;
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (host && (unshare(CLONE_NEWUTS) != 0 || sethostname(host, strlen(host)) != 0))
            _exit(2);
        tl_runtime *rt;
        tl_store *st;
        if (tl_runtime_new(NULL, &rt) != TL_OK || tl_store_open(path, 0, &st) != TL_OK ||
            tl_store_attach(st, rt) != TL_OK)
            _exit(3);
        if (write(ready[1], "k", 1) != 1)
            _exit(4);
        pause();
        _exit(0);
    }
    close(ready[1]);
    if (read(ready[0], &c, 1) != 1) {
        int status = 0;
        waitpid(child, &status, 0);
        fail_msg("the owner process did not start (exit %d)", WEXITSTATUS(status));
    }
    close(ready[0]);
    return child;
}

static void test_owner_on_another_host(void **state)
{
    (void)state;
    pid_t child = spawn_owner("elsewhere");
    tl_runtime *rt = new_rt();
    tl_store *st;
    assert_int_equal(tl_store_open(path, 0, &st), TL_OK);
    assert_int_equal(tl_store_attach(st, rt), TL_ELOCKED); /* alive: refused */
    assert_non_null(strstr(tl_store_errmsg(st), "on host elsewhere"));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* dead, under another host name: taken over (it used to be locked for good) */
    assert_int_equal(tl_store_attach(st, rt), TL_OK);
    assert_int_equal(query("SELECT pid FROM owner"), getpid());
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_two_stores_in_one_process(void **state)
{
    (void)state;
    tl_runtime *a = new_rt(), *b = new_rt();
    tl_store *sa = open_attached(a, 0), *sb;
    assert_int_equal(tl_store_open(path, 0, &sb), TL_OK);
    assert_int_equal(tl_store_attach(sb, b), TL_ELOCKED);
    char want[64];
    snprintf(want, sizeof want, "pid %d", (int)getpid());
    assert_non_null(strstr(tl_store_errmsg(sb), want));
    assert_int_equal(tl_store_close(sb), TL_OK); /* the refused one leaves the row alone */
    assert_int_equal(query("SELECT count(*) FROM owner"), 1);
    assert_int_equal(tl_store_checkpoint(sa), TL_OK); /* still the owner */
    assert_int_equal(tl_store_close(sa), TL_OK);
    assert_int_equal(query("SELECT count(*) FROM owner"), 0);
    /* and now b may */
    sb = open_attached(b, 0);
    tl_store_close(sb);
    tl_runtime_free(a);
    tl_runtime_free(b);
}

static void test_owner_row_of_a_reused_pid(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    tl_store *st = open_attached(rt, 0);
    tl_store_close(st);
    /* the row names a live process (our parent) on this host, which does
     * not hold the lock: the pid was reused, the owner is gone */
    char host[256], text[512];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    snprintf(text, sizeof text, "INSERT OR REPLACE INTO owner VALUES(1, %d, '%s', 0)",
             (int)getppid(), host);
    sql(text);
    st = open_attached(rt, 0);
    assert_int_equal(query("SELECT pid FROM owner"), getpid());
    tl_store_close(st);
    tl_runtime_free(rt);
}

/* ---- item 8: chunk rows of no checkpoint, and the last checkpoint id ---- */

static void test_orphan_chunk_rows_repaired(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    spawn_receivers(rt, 5);
    tl_store *st = open_attached(rt, 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    /* a checkpoint row deleted by hand leaves its chunk rows behind */
    sql("INSERT INTO chunks SELECT kind, key, 2, data FROM chunks WHERE ckpt = 1");
    st = open_attached(rt, 0);
    spawn_receivers(rt, 1);
    assert_int_equal(tl_store_checkpoint(st), TL_OK); /* used to fail: UNIQUE constraint */
    assert_int_equal(tl_store_last_checkpoint(st), 2);
    tl_store_close(st);
    tl_runtime_free(rt);
    rt = new_rt();
    st = open_attached(rt, 0);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 6);
    tl_store_close(st);
    tl_runtime_free(rt);
}

static void test_checkpoint_id_at_int64_max(void **state)
{
    (void)state;
    tl_runtime *rt = new_rt();
    spawn_receivers(rt, 3);
    tl_store *st = open_attached(rt, 0);
    assert_int_equal(tl_store_checkpoint(st), TL_OK);
    tl_store_close(st);
    sql("UPDATE checkpoints SET id = 9223372036854775807; "
        "UPDATE chunks SET ckpt = 9223372036854775807");
    st = open_attached(rt, 0);
    assert_int_equal(tl_store_last_checkpoint(st), INT64_MAX);
    spawn_receivers(rt, 1);
    assert_int_equal(tl_store_checkpoint(st), TL_ERANGE);
    assert_non_null(strstr(tl_store_errmsg(st), "exhausted"));
    tl_store_close(st);
    tl_runtime_free(rt);
    /* nothing was written: the newest is still the one at INT64_MAX */
    assert_int_equal(query("SELECT count(*) FROM checkpoints"), 1);
    rt = new_rt();
    st = open_attached(rt, 0);
    assert_int_equal(tl_store_restore(st), TL_OK);
    assert_int_equal(tl_tasklet_count(rt), 3);
    tl_store_close(st);
    tl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_foreign_sqlite_file_untouched, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_files_refused, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_not_files, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_file, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_files_private, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_owner_on_another_host, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_two_stores_in_one_process, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_owner_row_of_a_reused_pid, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_chunk_rows_repaired, setup_umask, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_id_at_int64_max, setup_umask, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
