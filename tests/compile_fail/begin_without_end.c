/* expect: TL_BEGIN_without_TL_END */
#include "tasklet.h"

typedef struct { int64_t n; } loc_t;

tl_status step(tl_frame *f, void *locals);
tl_status step(tl_frame *f, void *locals)
{
    loc_t *L = locals;
    TL_BEGIN(f);
    TL_YIELD(f);
    TL_RETURN(f, tl_i64(L->n));
}
