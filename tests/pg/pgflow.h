/*
 * pgflow.h -- the workflow the many-worker test and benchmark run
 * (tests/pg/torture.c seeds it, tests/pg/worker.c runs it): STEPS steps,
 * each an effect (flow_on_step, the worker's) followed by a yield, at which
 * the worker checkpoints; a step whose checkpoint committed is never run
 * again by an owner of the store, and a paused owner's late checkpoint is
 * refused.  A store (a schema) holds a group of these workflows, one
 * tasklet each, told apart by their number id (unique in the run).  The
 * group's participant table (flow_steps) holds one row per recorded step
 * ("w<id>/step-<K>": time the epoch, data the execution's id) and one per
 * workflow ended ("w<id>/done"), written in the checkpoint that records the
 * step or the end.
 */
#ifndef TL_PGFLOW_H
#define TL_PGFLOW_H

#include "tasklet.h"

typedef struct { int64_t id, k, steps; } flow_t;
static const tl_field flow_fields[] = {
    TL_FIELD(flow_t, id, TL_T_I64),
    TL_FIELD(flow_t, k, TL_T_I64),
    TL_FIELD(flow_t, steps, TL_T_I64),
};

/* The worker's hooks: step k of workflow id ran; workflow id ends. */
static void (*flow_on_step)(int64_t id, int64_t k);
static void (*flow_on_end)(int64_t id);

static tl_status flow(tl_frame *f, void *locals)
{
    flow_t *L = locals;
    TL_BEGIN(f);
    for (L->k = 1; L->k <= L->steps; L->k++) {
        if (flow_on_step)
            flow_on_step(L->id, L->k);
        TL_YIELD(f);
    }
    if (flow_on_end)
        flow_on_end(L->id);
    TL_END(f);
}
static const tl_func flow_fn = {"pgflow.flow", 2, flow, sizeof(flow_t), flow_fields,
                                TL_COUNTOF(flow_fields), NULL};

#endif
