/* expect: TL_RECV must be used between TL_BEGIN and TL_END */
#include "tasklet.h"

typedef struct { tl_chan *in; tl_value v; } loc_t;

/* no TL_BEGIN at all: a helper that is not a tasklet function */
int helper(tl_frame *f, loc_t *L);
int helper(tl_frame *f, loc_t *L)
{
    TL_RECV(f, L->in, L->v);
    return 0;
}
