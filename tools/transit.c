/*
 * transit.c -- what is in transit beside the checkpoints, for `tasklet ls`
 * (FORMAT.md section 7): mailbox rows not yet imported, refused mailbox
 * rows (dead letters, with their reason), and a node's outbox (sent, not
 * acknowledged) and inbox (transfer ids taken).  Nothing in transit is
 * invisible.  A table the store does not have is skipped: older stores
 * and stores that never moved a tasklet have none of them.
 */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

typedef struct transit_table {
    const char *name, *title, *sql;
} transit_table;

/* Each query gives: xid, to/peer, from, time, bytes, reason (NULLs where a
 * table has no such column). */
static const transit_table tables[] = {
    {"mailbox", "mailbox (not yet imported)",
     "SELECT xid, to_node, from_node, time, length(data), NULL FROM mailbox ORDER BY time, xid"},
    {"mailbox_refused", "dead letters (refused by their destination)",
     "SELECT xid, to_node, from_node, time, length(data), reason FROM mailbox_refused "
     "ORDER BY time, xid"},
    {"outbox", "outbox (sent by this node, not yet acknowledged)",
     "SELECT xid, peer, NULL, NULL, length(data), NULL FROM outbox ORDER BY rowid"},
    {"inbox", "inbox (transfer ids taken, not yet forgotten)",
     "SELECT xid, peer, NULL, time, NULL, NULL FROM inbox ORDER BY rowid"},
};

static bool has_table(cli_store *st, const char *name)
{
    sqlite3_stmt *s = NULL;
    bool yes = false;
    if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                           "name = ?1", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return yes;
}

static const char *text_col(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? (const char *)t : "";
}

static json_t *row_json(sqlite3_stmt *s)
{
    static const char *const keys[] = {"xid", "node", "from", "time", "bytes", "reason"};
    json_t *o = json_object();
    for (int c = 0; c < 6; c++) {
        if (sqlite3_column_type(s, c) == SQLITE_NULL)
            continue;
        json_object_set_new(o, keys[c], sqlite3_column_type(s, c) == SQLITE_INTEGER
                                            ? json_integer(sqlite3_column_int64(s, c))
                                            : cli_json_str(text_col(s, c),
                                                           strlen(text_col(s, c))));
    }
    return o;
}

static void row_text(sqlite3_stmt *s)
{
    printf("  %s  node %s", text_col(s, 0), text_col(s, 1));
    if (sqlite3_column_type(s, 2) != SQLITE_NULL)
        printf("  from %s", text_col(s, 2));
    if (sqlite3_column_type(s, 4) != SQLITE_NULL)
        printf("  %" PRId64 " bytes", (int64_t)sqlite3_column_int64(s, 4));
    if (sqlite3_column_type(s, 5) != SQLITE_NULL)
        printf("\n    reason: %s", text_col(s, 5));
    putchar('\n');
}

/* One table's rows as text (nothing when empty) or into j[name]. */
static void one_table(cli_store *st, const transit_table *t, json_t *j)
{
    sqlite3_stmt *s = NULL;
    if (!has_table(st, t->name) || sqlite3_prepare_v2(st->db, t->sql, -1, &s, NULL) != SQLITE_OK) {
        sqlite3_finalize(s);
        return;
    }
    json_t *a = j ? json_array() : NULL;
    int n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        if (a) {
            json_array_append_new(a, row_json(s));
        } else {
            if (n == 0)
                printf("\n%s:\n", t->title);
            row_text(s);
        }
        n++;
    }
    sqlite3_finalize(s);
    if (a)
        json_object_set_new(j, t->name, a);
}

void cli_transit_text(cli_store *st)
{
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++)
        one_table(st, &tables[i], NULL);
}

json_t *cli_transit_json(cli_store *st)
{
    json_t *j = json_object();
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++)
        one_table(st, &tables[i], j);
    return j;
}
