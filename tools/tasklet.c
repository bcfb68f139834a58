/*
 * tasklet.c -- the `tasklet` command: finds the command, parses its
 * options, prints help, and runs it (cmd_view.c, cmd_verify.c,
 * cmd_prune.c).  docs/CLI.md describes every command.
 *
 * Exit status: 0 success; 1 the command failed or the store is damaged;
 * 2 a usage error, or the file cannot be opened, is not SQLite, or is not
 * a libtasklet store.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

enum { OPT_JSON = 1, OPT_CKPT = 2, OPT_KEEP = 4, OPT_ALL = 8, OPT_WAIT = 16, OPT_KEY = 32,
       OPT_TO = 64 };

typedef struct cli_cmd {
    const char *name, *usage, *summary, *help;
    unsigned opts;
    int nargs; /* positionals: DB, or DB and ID */
    int (*run)(const cli_opts *o);
    const char *second; /* the name of the second positional; NULL: "ID" */
} cli_cmd;

static const cli_cmd commands[] = {
    {"ls", "[--json] [--ckpt N] DB", "tasklets and channels of the latest checkpoint",
     "Lists the tasklets (id, name, top function, state, what it waits on) and the\n"
     "channels (id, name, balance, queue length, capacity, closing) of the latest\n"
     "checkpoint.\n",
     OPT_JSON | OPT_CKPT, 1, cli_cmd_ls},
    {"show", "[--json] [--ckpt N] DB ID", "one tasklet: its record, frames and locals",
     "Shows tasklet ID of the latest checkpoint: every field of its record, then its\n"
     "frames bottom to top with function, resume point (pc) and every local.\n",
     OPT_JSON | OPT_CKPT, 2, cli_cmd_show},
    {"dump", "[--json] [--ckpt N] DB", "the whole latest snapshot, decoded",
     "Prints the latest checkpoint whole: its row, its head, and every chunk it\n"
     "selects (functions, tasklets, channels), then the tombstones it selects.\n",
     OPT_JSON | OPT_CKPT, 1, cli_cmd_dump},
    {"verify", "[--json] [--ckpt N | --all] DB", "check every record and the latest checkpoint",
     "Checks the store's identity and schema version, meta 'format', every stored\n"
     "record (envelope, CRC, zlib, document shape), and then the latest checkpoint\n"
     "(or --ckpt N, or --all checkpoints) across its records: counts against the\n"
     "head, ids that must exist, queues against waits.  Prints\n"
     "\"ok: checkpoint N, T tasklets, C channels\" and exits 0 when sound; otherwise\n"
     "prints one line per problem naming the record and exits 1.\n",
     OPT_JSON | OPT_CKPT | OPT_ALL, 1, cli_cmd_verify},
    {"checkpoints", "[--json] DB", "list the checkpoints",
     "Lists the checkpoints: id, time (ISO 8601, UTC), tasklets, channels, and the\n"
     "record bytes each wrote.\n",
     OPT_JSON, 1, cli_cmd_checkpoints},
    {"prune", "[--json] --keep N DB", "delete all but the N newest checkpoints",
     "Deletes all but the N newest checkpoints, and every chunk row no kept checkpoint\n"
     "needs, in one transaction; prints what was removed.  Every kept checkpoint stays\n"
     "loadable.  Then gives the freed space back to the file system (an incremental\n"
     "vacuum, or a VACUUM for a store made without auto_vacuum).  It waits up to 5 s\n"
     "for a busy store.  On PostgreSQL: refused while the owner's lease is live;\n"
     "fences a paused owner (docs/CLI.md).\n",
     OPT_JSON | OPT_KEEP, 1, cli_cmd_prune},
    {"backup", "[--json] DB OUT", "a consistent copy of a store, safe while it runs",
     "Copies store DB into the new file OUT with SQLite's online backup: one\n"
     "consistent snapshot of DB and its -wal file, taken while the owner may be\n"
     "checkpointing, written as one self-contained file (mode 0600, no -wal).\n"
     "Never overwrites OUT.  Use it instead of cp: after a crash most committed\n"
     "checkpoints can still be in DB-wal, which a copy of DB alone misses.\n",
     OPT_JSON, 2, cli_cmd_backup, "OUT"},
    {"wf ls", "[--json] DB", "workflows: id, function, status, what each waits on",
     "Lists every workflow of store DB (table wf, FORMAT.md section 11): its id,\n"
     "function, status (pending, running, waiting, done, failed, cancelled), what\n"
     "it waits on (a step, a topic, a child), its recorded steps and its age.\n",
     OPT_JSON, 1, cli_cmd_wf_ls},
    {"wf show", "[--json] DB ID", "one workflow: its steps, messages and result",
     "Shows workflow ID: its row, every recorded step (attempts, result or error,\n"
     "times) and every message posted to it, received or still in transit.\n",
     OPT_JSON, 2, cli_cmd_wf_show},
    {"send", "[--json] [--key K] DB ID TOPIC JSON", "post a message to a workflow",
     "Posts JSON as a message on TOPIC to workflow ID, in one transaction of its\n"
     "own: it works whether the owner runs or not, and a running owner takes it\n"
     "in within milliseconds.  With --key K, a second post with key K to ID is\n"
     "refused.  Fails (exit 1) if ID is unknown or finished.\n",
     OPT_JSON | OPT_KEY, 4, cli_cmd_send},
    {"send-chan", "[--json] [--key K] DB NAME JSON", "post a message to a named channel",
     "Posts JSON as a message to the named channel NAME of the store's workflow\n"
     "engine (tl_wf_chan), in one transaction of its own, owner running or not;\n"
     "the owner sends it on the channel, in posting order, exactly once.  With\n"
     "--key K, a second post with key K to NAME is refused.  Fails (exit 1) if\n"
     "the store has no channel NAME.\n",
     OPT_JSON | OPT_KEY, 3, cli_cmd_send_chan},
    {"cancel", "[--json] DB ID", "cancel a workflow and its children",
     "Asks for workflow ID to be cancelled: its owner delivers TL_ECANCELED at\n"
     "its suspension point (now if it runs, when it next runs otherwise).\n"
     "Fails (exit 1) if ID is unknown or finished.\n",
     OPT_JSON, 2, cli_cmd_cancel},
    {"result", "[--json] [--wait SECONDS] DB ID", "a workflow's result (waiting for it)",
     "Prints workflow ID's result (\"done VALUE\") or error (\"failed CODE MSG\",\n"
     "\"cancelled ...\").  With --wait, waits up to SECONDS for it to finish,\n"
     "woken by the store's writes.  Exit 0 done, 1 failed, cancelled or still\n"
     "running.\n",
     OPT_JSON | OPT_WAIT, 2, cli_cmd_result},
    {"rollback", "[--json] --to N DB", "make checkpoint N the newest (after it verifies)",
     "Makes checkpoint N the newest: after checking that N loads whole and its records\n"
     "agree (verify's checks), deletes the newer checkpoints and every chunk row\n"
     "newer than N, in one transaction, and says what it removed.  For a store whose\n"
     "newest checkpoints are damaged.  Refused while a process owns the store (it\n"
     "holds DB-lock); holds that lock itself meanwhile.  On PostgreSQL: refused while\n"
     "the owner's lease is live; fences a paused owner (docs/CLI.md).\n",
     OPT_JSON | OPT_TO, 1, cli_cmd_rollback, NULL},
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

static void usage(FILE *out)
{
    fputs("usage: tasklet COMMAND [OPTIONS] DB [ARGS]\n\n"
          "Inspects and maintains libtasklet stores (SQLite files, docs/FORMAT.md).\n\n"
          "commands:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'tasklet COMMAND --help' for a command's options.\n"
          "Exit status: 0 ok; 1 failure or damaged store; 2 usage error, or not a\n"
          "libtasklet store.\n", out);
}

static void command_help(const cli_cmd *c)
{
    printf("usage: tasklet %s %s\n\n%s\noptions:\n", c->name, c->usage, c->help);
    if (c->opts & OPT_JSON)
        puts("  --json      print one JSON document instead of text");
    if (c->opts & OPT_CKPT)
        puts("  --ckpt N    use checkpoint N instead of the latest");
    if (c->opts & OPT_ALL)
        puts("  --all       check every checkpoint, not only the latest");
    if (c->opts & OPT_KEEP)
        puts("  --keep N    how many of the newest checkpoints to keep (N >= 1)");
    if (c->opts & OPT_WAIT)
        puts("  --wait S    wait up to S seconds for the workflow to finish");
    if (c->opts & OPT_KEY)
        puts("  --key K     deduplication key: a second post with K is refused");
    if (c->opts & OPT_TO)
        puts("  --to N      the checkpoint to make the newest");
    puts("  --help      show this help");
}

static int usage_error(const cli_cmd *c, const char *what, const char *arg)
{
    cli_complain("%s: %s%s%s", c->name, what, arg ? " " : "", arg ? arg : "");
    fprintf(stderr, "usage: tasklet %s %s\n", c->name, c->usage);
    return CLI_EXIT_USAGE;
}

/* "--name N" or "--name=N": 1 and *val when argv[*i] is that option. */
static int opt_value(const char *name, int argc, char **argv, int *i, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n))
        return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n])
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int number_opt(const cli_cmd *c, const char *name, const char *val, int64_t *out,
                      bool *has)
{
    uint64_t u;
    if (!val || *val == '#' || !cli_parse_u64(val, &u) || u < 1 || u > INT64_MAX)
        return usage_error(c, name, "needs a number >= 1");
    *out = (int64_t)u;
    *has = true;
    return 0;
}

/* One option at argv[*i]: 0 taken, -1 help printed, else an exit code. */
static int parse_opt(const cli_cmd *c, int argc, char **argv, int *i, cli_opts *o)
{
    const char *a = argv[*i], *val;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        command_help(c);
        return -1;
    }
    if ((c->opts & OPT_JSON) && !strcmp(a, "--json"))
        return o->json = true, 0;
    if ((c->opts & OPT_ALL) && !strcmp(a, "--all"))
        return o->all = true, 0;
    if ((c->opts & OPT_CKPT) && opt_value("--ckpt", argc, argv, i, &val))
        return number_opt(c, "--ckpt", val, &o->ckpt, &o->has_ckpt);
    if ((c->opts & OPT_KEEP) && opt_value("--keep", argc, argv, i, &val))
        return number_opt(c, "--keep", val, &o->keep, &o->has_keep);
    if ((c->opts & OPT_WAIT) && opt_value("--wait", argc, argv, i, &val))
        return number_opt(c, "--wait", val, &o->wait, &o->has_wait);
    if ((c->opts & OPT_KEY) && opt_value("--key", argc, argv, i, &val)) {
        if (!val || !val[0] || strlen(val) > 200)
            return usage_error(c, "--key", "needs 1 to 200 bytes");
        o->key = val;
        return 0;
    }
    if ((c->opts & OPT_TO) && opt_value("--to", argc, argv, i, &val))
        return number_opt(c, "--to", val, &o->to, &o->has_to);
    return usage_error(c, "unknown option", a);
}

static int parse_args(const cli_cmd *c, int argc, char **argv, cli_opts *o)
{
    const char *pos[4] = {NULL, NULL, NULL, NULL};
    int npos = 0, rc;
    bool opts_done = false;
    for (int i = 2; i < argc; i++) {
        if (!opts_done && !strcmp(argv[i], "--"))
            opts_done = true;
        else if (!opts_done && argv[i][0] == '-' && argv[i][1]) {
            if ((rc = parse_opt(c, argc, argv, &i, o)) != 0)
                return rc;
        } else if (npos < c->nargs)
            pos[npos++] = argv[i];
        else
            return usage_error(c, "unexpected argument", argv[i]);
    }
    if (npos < c->nargs)
        return usage_error(c, npos == 0 ? "missing DB"
                              : c->second && !strcmp(c->second, "OUT") ? "missing OUT"
                                                                        : "missing ID", NULL);
    if (o->all && o->has_ckpt)
        return usage_error(c, "--all and --ckpt exclude each other", NULL);
    o->db = pos[0];
    o->arg = pos[1];
    o->arg2 = pos[2];
    o->arg3 = pos[3];
    return 0;
}

static const cli_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

/* The commands that read a postgresql:// store through a copy (pg.c). */
static bool reads_copy(const cli_cmd *c)
{
    static const char *const names[] = {"ls", "show", "dump", "verify", "checkpoints",
                                        "wf ls", "wf show", "backup"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(c->name, names[i]))
            return true;
    return false;
}

static int run_command(const cli_cmd *c, int argc, char **argv)
{
    cli_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse_args(c, argc, argv, &o);
    if (rc < 0)
        return CLI_EXIT_OK;
    if (rc > 0)
        return rc;
    if (cli_is_url(o.db) && reads_copy(c))
        return cli_on_copy(&o, c->run);
    if (cli_is_url(o.db) && (!strcmp(c->name, "prune") || !strcmp(c->name, "rollback")))
        return cli_on_rewrite(&o, c->run);
    return c->run(&o);
}

int main(int argc, char **argv)
{
    const cli_cmd *c;
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        c = argc > 2 && !strcmp(argv[1], "help") ? find_command(argv[2]) : NULL;
        if (c)
            command_help(c);
        else
            usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tasklet %s (store format %d, schema %d)\n", CLI_VERSION, CLI_FORMAT_VERSION,
               CLI_STORE_VERSION);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "wf") && argc > 2 && argv[2][0] != '-') {
        char name[32];
        snprintf(name, sizeof name, "wf %s", argv[2]);
        if ((c = find_command(name)) != NULL)
            return run_command(c, argc - 1, argv + 1);
    }
    c = find_command(argv[1]);
    if (!c) {
        cli_complain("unknown command '%s'", argv[1]);
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    return run_command(c, argc, argv);
}
