/*
 * test_crash.c -- crash and resume with real processes: the built
 * examples are run on a SQLite store, killed with SIGKILL at random
 * instants (many of them inside a checkpoint: the counter spends most of
 * its time in one), started again, and finally let finish.
 *
 * What must hold: a run that is not killed ends with exit 0 and the exact
 * result; the numbers a program printed, read through a pipe, never go
 * down across all the runs on one store (a program prints only what a
 * committed checkpoint holds); a finished store run again gives the same
 * answer; and the batch job's result equals that of an uninterrupted run.
 *
 * The programs come from the environment: DURABLE_COUNTER and BATCH (set
 * by meson).  CRASH_SEED=n replays a run's kill instants.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COUNTER_GOAL "1000000"
#define COUNTER_KILLS 20
#define BATCH_RECORDS "20000"
#define BATCH_KILLS 10
#define MAX_ATTEMPTS 80         /* runs tried to get the kills wanted */
#define FINISH_TIMEOUT_MS 120000

/* What the runs on one store printed: the numbers after `prefix`, which
 * must never go down, and the last final line ("done ...", "result ..."). */
typedef struct watch {
    const char *prefix;
    int64_t last;        /* highest number seen, -1 before any */
    int64_t lines;
    char backwards[320]; /* the first decrease seen, "" if none */
    char final[256];
    char partial[256];   /* a line being read */
    size_t plen;
} watch;

typedef struct run {
    int status;          /* from waitpid */
    bool killed;         /* we sent SIGKILL before it ended */
    double ms;           /* wall time of the run */
    double first_ms;     /* when its first output came, -1 if none */
} run;

/* When to kill a run: at_ms after its start, or after its first output
 * (once it is past opening and restoring the store), or at_ms after it
 * printed a number of at least at_count (at_count >= 0): a kill placed by
 * progress lands mid-job however fast the disk is.  at_ms < 0: never, the
 * run must end within FINISH_TIMEOUT_MS. */
typedef struct when {
    int at_ms;
    bool after_output;
    int64_t at_count;
} when;

static const when never = {-1, false, -1};

typedef struct fixture {
    char dir[256];
    char db[300];
    uint64_t rng;
    double startup_ms;   /* the longest start-up (time to first output) seen */
} fixture;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t next_rand(fixture *fx)
{
    fx->rng ^= fx->rng << 13;
    fx->rng ^= fx->rng >> 7;
    fx->rng ^= fx->rng << 17;
    return fx->rng;
}

static const char *program(const char *var)
{
    const char *path = getenv(var);
    if (!path || !*path || access(path, X_OK) != 0)
        fail_msg("set %s to the built example (meson does: meson test -C build crash)", var);
    return path;
}

/* ---- reading a child's output ---- */

static void watch_init(watch *w, const char *prefix)
{
    memset(w, 0, sizeof *w);
    w->prefix = prefix;
    w->last = -1;
}

static void watch_line(watch *w, const char *line)
{
    size_t n = strlen(w->prefix);
    if (strncmp(line, "done ", 5) == 0 || strncmp(line, "result ", 7) == 0) {
        snprintf(w->final, sizeof w->final, "%s", line);
        return;
    }
    if (strncmp(line, w->prefix, n) != 0)
        return;
    char *end;
    long long v = strtoll(line + n, &end, 10);
    if (end == line + n)
        fail_msg("unreadable progress line: '%s'", line);
    if (v < w->last && !w->backwards[0])
        snprintf(w->backwards, sizeof w->backwards, "printed %lld after %lld", v,
                 (long long)w->last);
    if (v > w->last)
        w->last = v;
    w->lines++;
}

/* Feeds bytes from the pipe; complete lines go to watch_line.  A line cut
 * by SIGKILL (no newline at EOF) is dropped by the caller. */
static void watch_feed(watch *w, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            w->partial[w->plen] = '\0';
            watch_line(w, w->partial);
            w->plen = 0;
        } else if (w->plen + 1 < sizeof w->partial) {
            w->partial[w->plen++] = p[i];
        } else {
            fail_msg("a line of output longer than %zu bytes", sizeof w->partial);
        }
    }
}

/* ---- running a child ---- */

static pid_t live_child; /* killed by teardown if a test fails mid-run */

static pid_t spawn(const char *const argv[], int *out_fd)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    *out_fd = fds[0];
    live_child = pid;
    return pid;
}

/* Runs argv, reading its output into w, and kills it as k says (unless
 * it ended before). */
static run run_child(const char *const argv[], when k, watch *w)
{
    run r = {0, false, 0, -1};
    int fd;
    char buf[4096];
    double t0 = now_ms();
    bool by_count = k.at_ms >= 0 && k.at_count >= 0;
    double deadline = t0 + (k.at_ms < 0 ? FINISH_TIMEOUT_MS
                            : k.after_output || by_count ? 1e9 : k.at_ms);
    pid_t pid = spawn(argv, &fd);
    bool sent = false;
    for (;;) {
        double left = deadline - now_ms();
        if (!sent && left <= 0) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            sent = true;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int ready = poll(&pfd, 1, sent ? -1 : (int)left + 1);
        if (ready < 0 && errno == EINTR)
            continue;
        assert_true(ready >= 0);
        if (ready == 0)
            continue;
        ssize_t got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        assert_true(got >= 0);
        if (got == 0)
            break;
        if (r.first_ms < 0) {
            r.first_ms = now_ms() - t0;
            if (k.at_ms >= 0 && k.after_output && !by_count)
                deadline = now_ms() + k.at_ms;
        }
        watch_feed(w, buf, (size_t)got);
        if (by_count && w->last >= k.at_count && deadline > now_ms() + k.at_ms) {
            deadline = now_ms() + k.at_ms;
            by_count = false;
        }
    }
    w->plen = 0; /* a line cut by the kill */
    close(fd);
    assert_int_equal(waitpid(pid, &r.status, 0), pid);
    live_child = 0;
    r.ms = now_ms() - t0;
    r.killed = sent;
    if (sent && k.at_ms < 0)
        fail_msg("%s did not finish within %d ms", argv[0], FINISH_TIMEOUT_MS);
    return r;
}

static bool died_by_kill(run r)
{
    return WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL;
}

static void expect_success(const char *what, run r)
{
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
        fail_msg("%s: expected exit 0, got %s %d", what,
                 WIFEXITED(r.status) ? "exit" : "signal",
                 WIFEXITED(r.status) ? WEXITSTATUS(r.status) : WTERMSIG(r.status));
}

/* A run we meant to kill either died by the kill or had already ended
 * successfully (the job finished first). */
static void expect_killed_or_done(const char *what, run r)
{
    if (!died_by_kill(r))
        expect_success(what, r);
}

static void expect_monotonic(const watch *w)
{
    if (w->backwards[0])
        fail_msg("the printed %snumbers went backwards: %s", w->prefix, w->backwards);
}

/* Starts the store again from nothing: a job finished before all its kills
 * were done, so the next runs would find it finished and could not be
 * killed mid-job.  The kills done so far still count. */
static void restart_store(fixture *fx, watch *w)
{
    const char *suffix[] = {"", "-wal", "-shm", "-journal", "-lock"};
    char path[340];
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(path, sizeof path, "%s%s", fx->db, suffix[i]);
        unlink(path);
    }
    watch_init(w, w->prefix);
    fprintf(stderr, "test_crash: the job finished before its kills: a fresh store\n");
}

/* Kills runs of argv until `kills` of them died by SIGKILL.  With goal > 0
 * (a job that prints its progress up to goal), kill i is placed by
 * progress: 0..max_ms after the run printed a number in the i-th of
 * kills+1 equal slices of [0, goal], so the kills spread over the job
 * whatever the machine's or the disk's speed.  With goal == 0, 0..max_ms
 * after the run's first output.  One run in four is killed instead at a
 * uniform instant of its start-up (opening, creating or restoring the
 * store), measured as the runs go.  A job that finishes anyway is started
 * again on a fresh store (restart_store). */
static int kill_runs(fixture *fx, const char *const argv[], watch *w, int kills, int max_ms,
                     int64_t goal)
{
    int died = 0, attempts = 0;
    while (died < kills) {
        assert_true(++attempts <= MAX_ATTEMPTS);
        when k = {(int)(next_rand(fx) % (uint64_t)(max_ms + 1)), true, -1};
        if (goal > 0) {
            int64_t slice = goal / (kills + 1);
            k.at_count = slice * died + (int64_t)(next_rand(fx) % (uint64_t)slice);
        }
        if (attempts % 4 == 0)
            k = (when){(int)(next_rand(fx) % (uint64_t)(fx->startup_ms + 1)), false, -1};
        w->final[0] = '\0';
        run r = run_child(argv, k, w);
        if (r.first_ms > fx->startup_ms)
            fx->startup_ms = r.first_ms;
        expect_killed_or_done(argv[0], r);
        expect_monotonic(w);
        died += died_by_kill(r);
        if (!died_by_kill(r) && w->final[0] && died < kills)
            restart_store(fx, w);
    }
    return attempts;
}

/* ---- fixtures ---- */

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/tl-crash-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->db, sizeof fx->db, "%s/store.db", fx->dir);
    const char *seed = getenv("CRASH_SEED");
    fx->startup_ms = 20;
    fx->rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (fx->rng == 0)
        fx->rng = 1;
    fprintf(stderr, "test_crash: CRASH_SEED=%" PRIu64 " in %s\n", fx->rng, fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (live_child > 0) {
        kill(live_child, SIGKILL);
        waitpid(live_child, NULL, 0);
        live_child = 0;
    }
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", fx->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* ---- the tests ---- */

static void test_counter_survives_kill9(void **state)
{
    fixture *fx = *state;
    const char *const argv[] = {program("DURABLE_COUNTER"), fx->db, COUNTER_GOAL, NULL};
    watch w;
    watch_init(&w, "count ");
    double t0 = now_ms();
    int attempts = kill_runs(fx, argv, &w, COUNTER_KILLS, 5, strtoll(COUNTER_GOAL, NULL, 10));
    int64_t before = w.last;
    fprintf(stderr, "test_crash: counter: %d kills in %d runs (%.0f ms), count %" PRId64
            " before the last run\n", COUNTER_KILLS, attempts, now_ms() - t0, before);
    assert_true(before > 0); /* the killed runs got somewhere */

    run r = run_child(argv, never, &w);
    expect_success("durable_counter, last run", r);
    expect_monotonic(&w);
    assert_string_equal(w.final, "done " COUNTER_GOAL);
    assert_int_equal(w.last, strtoll(COUNTER_GOAL, NULL, 10));
    fprintf(stderr, "test_crash: counter: last run %.0f ms\n", r.ms);

    /* a finished store: the same answer, at once */
    w.final[0] = '\0';
    r = run_child(argv, never, &w);
    expect_success("durable_counter on a finished store", r);
    expect_monotonic(&w);
    assert_string_equal(w.final, "done " COUNTER_GOAL);
    assert_int_equal(w.last, strtoll(COUNTER_GOAL, NULL, 10));
}

static void test_batch_survives_kill9(void **state)
{
    fixture *fx = *state;
    char ref_db[320];
    snprintf(ref_db, sizeof ref_db, "%s/reference.db", fx->dir);
    const char *const ref_argv[] = {program("BATCH"), ref_db, BATCH_RECORDS, NULL};
    const char *const argv[] = {program("BATCH"), fx->db, BATCH_RECORDS, NULL};
    watch ref, w;
    watch_init(&ref, "progress ");
    watch_init(&w, "progress ");

    run r = run_child(ref_argv, never, &ref);
    expect_success("batch, uninterrupted", r);
    expect_monotonic(&ref);
    assert_true(strncmp(ref.final, "result ", 7) == 0);
    assert_int_equal(ref.last, strtoll(BATCH_RECORDS, NULL, 10));

    /* kill well within the time the job takes, so that most kills land
     * mid-job */
    int job_ms = (int)(r.ms - r.first_ms);
    int max_ms = job_ms / 10 > 3 ? job_ms / 10 : 3;
    int attempts = kill_runs(fx, argv, &w, BATCH_KILLS, max_ms, strtoll(BATCH_RECORDS, NULL, 10));
    fprintf(stderr, "test_crash: batch: uninterrupted %.0f ms; %d kills in %d runs "
            "(delays 0..%d ms), progress %" PRId64 " before the last run\n",
            r.ms, BATCH_KILLS, attempts, max_ms, w.last);

    r = run_child(argv, never, &w);
    expect_success("batch, last run", r);
    expect_monotonic(&w);
    assert_string_equal(w.final, ref.final);
    assert_int_equal(w.last, strtoll(BATCH_RECORDS, NULL, 10));

    w.final[0] = '\0';
    r = run_child(argv, never, &w);
    expect_success("batch on a finished store", r);
    assert_string_equal(w.final, ref.final);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counter_survives_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_survives_kill9, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
