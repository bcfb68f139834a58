/*
 * util.c -- small helpers of the tasklet tool: messages that name the
 * record they are about, checked allocation, growable strings, ISO 8601
 * times and aligned text tables.
 *
 * Allocation failure ends the tool with exit code 1 and a message (never
 * abort): every size requested here was first bounded by the bytes of the
 * file, so it only happens when the machine is out of memory.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- locations and errors ---- */

cli_loc cli_loc_chunk(int64_t kind, int64_t key, int64_t ckpt)
{
    cli_loc loc = {"chunks", NULL, kind, key, ckpt};
    return loc;
}

cli_loc cli_loc_ckpt(int64_t id)
{
    cli_loc loc = {"checkpoints", NULL, -1, -1, id};
    return loc;
}

cli_loc cli_loc_named(const char *table, const char *name)
{
    cli_loc loc = {table, name, -1, -1, -1};
    return loc;
}

void cli_loc_text(const cli_loc *loc, char *buf, size_t n)
{
    if (!loc->table)
        snprintf(buf, n, "store");
    else if (!strcmp(loc->table, "chunks") && loc->kind >= 0)
        snprintf(buf, n, "chunks(kind=%" PRId64 ", key=%" PRId64 ", ckpt=%" PRId64 ")",
                 loc->kind, loc->key, loc->ckpt);
    else if (!strcmp(loc->table, "checkpoints") && loc->ckpt >= 0)
        snprintf(buf, n, "checkpoints(id=%" PRId64 ")", loc->ckpt);
    else if (!strcmp(loc->table, "pragma"))
        snprintf(buf, n, "PRAGMA %s", loc->name);
    else if (loc->name)
        snprintf(buf, n, "%s(key='%s')", loc->table, loc->name);
    else
        snprintf(buf, n, "table %s", loc->table);
}

bool cli_loc_equal(const cli_loc *a, const cli_loc *b)
{
    if (!a->table || !b->table)
        return a->table == b->table;
    return !strcmp(a->table, b->table) && a->kind == b->kind && a->key == b->key
           && a->ckpt == b->ckpt;
}

int cli_fail(cli_err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void put_str(char *dst, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (n > cap - 1 - *len)
        n = cap - 1 - *len;
    memcpy(dst + *len, s, n);
    *len += n;
    dst[*len] = '\0';
}

int cli_wrap(cli_err *e, const char *fmt, ...)
{
    char ctx[256], old[sizeof e->msg];
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    e->msg[0] = '\0';
    put_str(e->msg, sizeof e->msg, &len, ctx);
    put_str(e->msg, sizeof e->msg, &len, ": ");
    put_str(e->msg, sizeof e->msg, &len, old);
    return -1;
}

void cli_print_err(const cli_err *e)
{
    char where[160];
    if (!e->loc.table) {
        fprintf(stderr, "tasklet: %s\n", e->msg);
        return;
    }
    cli_loc_text(&e->loc, where, sizeof where);
    fprintf(stderr, "tasklet: %s: %s\n", where, e->msg);
}

void cli_complain(const char *fmt, ...)
{
    va_list ap;
    fputs("tasklet: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- allocation ---- */

static void out_of_memory(void)
{
    fputs("tasklet: out of memory\n", stderr);
    exit(CLI_EXIT_FAIL);
}

void *cli_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

void *cli_xrealloc(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        out_of_memory();
    size_t bytes = n * size;
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q)
        out_of_memory();
    return q;
}

static size_t pow2_ceil(size_t n)
{
    size_t c = 1;
    while (c < n)
        c *= 2;
    return c;
}

void *cli_xgrow(void *p, size_t n, size_t add, size_t size)
{
    size_t have = n ? pow2_ceil(n) : 0, need = n + add;
    if (need <= have)
        return p;
    return cli_xrealloc(p, pow2_ceil(need), size);
}

char *cli_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cli_xcalloc(n, 1);
    memcpy(d, s, n);
    return d;
}

/* ---- strings ---- */

static void buf_reserve(cli_buf *b, size_t more)
{
    if (b->len + more < b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap <= b->len + more)
        cap *= 2;
    b->p = cli_xrealloc(b->p, cap, 1);
    b->cap = cap;
}

void cli_buf_put(cli_buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cli_buf_printf(cli_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

const char *cli_buf_str(const cli_buf *b) { return b->p ? b->p : ""; }

void cli_buf_reset(cli_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void cli_buf_free(cli_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- time ---- */

void cli_time_iso(int64_t ns, char *out, size_t n)
{
    int64_t sec = ns / 1000000000, rem = ns % 1000000000;
    if (rem < 0) {
        rem += 1000000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char date[64];
    if ((int64_t)t != sec || !gmtime_r(&t, &tm) || tm.tm_year > 9999 - 1900
        || tm.tm_year < -1900 || !strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(out, n, "@%" PRId64 "ns", ns);
        return;
    }
    snprintf(out, n, "%s.%03dZ", date, (int)(rem / 1000000));
}

/* ---- tables ---- */

void cli_table_init(cli_table *t, size_t ncols, const char *const *heads,
                    const char *align)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->heads = heads;
    t->align = align;
}

void cli_table_add(cli_table *t, const char *cell)
{
    t->cells = cli_xgrow(t->cells, t->ncells, 1, sizeof *t->cells);
    t->cells[t->ncells++] = cli_xstrdup(cell);
}

void cli_table_addf(cli_table *t, const char *fmt, ...)
{
    cli_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        b.p = cli_xcalloc((size_t)n + 1, 1);
        va_start(ap, fmt);
        vsnprintf(b.p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    cli_table_add(t, cli_buf_str(&b));
    cli_buf_free(&b);
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void print_cell(FILE *out, const char *s, size_t width, char align, bool last)
{
    size_t pad = width - text_width(s);
    if (align == 'r')
        fprintf(out, "%*s%s", (int)pad, "", s);
    else if (last)
        fputs(s, out);
    else
        fprintf(out, "%s%*s", s, (int)pad, "");
}

void cli_table_print(const cli_table *t, FILE *out, const char *indent)
{
    size_t width[16] = {0}, ncols = t->ncols < 16 ? t->ncols : 16;
    for (size_t c = 0; c < ncols; c++)
        width[c] = text_width(t->heads[c]);
    for (size_t i = 0; i < t->ncells; i++) {
        size_t w = text_width(t->cells[i]), c = i % t->ncols;
        if (c < ncols && w > width[c])
            width[c] = w;
    }
    size_t nrows = t->ncells / t->ncols;
    for (size_t r = 0; r <= nrows; r++) {
        fputs(indent, out);
        for (size_t c = 0; c < ncols; c++) {
            const char *s = r == 0 ? t->heads[c] : t->cells[(r - 1) * t->ncols + c];
            print_cell(out, s, width[c], t->align[c], c + 1 == ncols);
            if (c + 1 < ncols)
                fputs("  ", out);
        }
        fputc('\n', out);
    }
}

void cli_table_free(cli_table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '#')
        s++;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}
