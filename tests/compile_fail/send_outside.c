/* expect: TL_SEND must be used between TL_BEGIN and TL_END */
#include "tasklet.h"

typedef struct { tl_chan *out; tl_value v; } loc_t;

tl_status step(tl_frame *f, void *locals);
tl_status step(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_SEND(f, L->out, L->v); /* before TL_BEGIN */
    TL_BEGIN(f);
    TL_END(f);
}
