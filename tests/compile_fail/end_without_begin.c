/* expect: TL_END without TL_BEGIN */
#include "tasklet.h"

tl_status step(tl_frame *f, void *locals);
tl_status step(tl_frame *f, void *locals)
{
    (void)locals;
    TL_END(f);
}
