/*
 * store_sqlite.h -- the SQLite backend's connection, for tests and
 * benchmarks only (internal; not installed).
 *
 * The public API no longer hands out the connection (tl_store_sqlite left
 * it after 0.1.0): a store may live on another backend, and writes through the
 * connection would bypass the fencing epoch.  The library's own tests use
 * it to simulate a full or read-only disk (PRAGMA max_page_count,
 * query_only) and to count rows; tools/ reads the file with its own
 * connection.
 */
#ifndef TL_STORE_SQLITE_H
#define TL_STORE_SQLITE_H

#include "tasklet.h"

/* The store's sqlite3 connection (sqlite3 *), or NULL when st is not an
 * open SQLite store.  Do not write the store's tables through it. */
void *tl__store_sqlite(tl_store *st);

#endif
