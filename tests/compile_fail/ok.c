/* expect: OK (the control: compiles without a warning) */
#include "tasklet.h"

typedef struct { tl_chan *ch; tl_value v; int64_t i; } loc_t;

/* a macro of the user with two suspension points */
#define SEND_TWICE(f, ch, v) \
    do { TL_SEND(f, ch, v); TL_SEND(f, ch, v); } while (0)

tl_status step(tl_frame *f, void *locals);
tl_status step(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    TL_YIELD(f); TL_YIELD(f); /* two on one line */
    SEND_TWICE(f, L->ch, L->v);
    TL_RECV(f, L->ch, L->v);
    TL_END(f);
}
