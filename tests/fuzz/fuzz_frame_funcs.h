/*
 * fuzz_frame_funcs.h -- the tasklet function the frame fuzzer moves
 * between nodes, shared by the harness (fuzz_frames.c) and its seed
 * generator (make_frame_seeds.c).  fuzz_funcs.h's functions keep a
 * tasklet field in their locals, which a moving tasklet may not hold.
 *
 * Invariant: it survives any locals a snapshot can give it (loops run
 * while 0 <= i < FZ_MAX_LOOP).  The seeds record its resume points by
 * source line: after editing it, regenerate corpus-frames/.
 */
#ifndef TL_FUZZ_FRAME_FUNCS_H
#define TL_FUZZ_FRAME_FUNCS_H

#include "fuzz_funcs.h"

typedef struct fz_relay {
    tl_chan *in, *out;
    tl_value v;
    int64_t i, n, until;
} fz_relay;

static const tl_field fz_relay_fields[] = {
    TL_FIELD(fz_relay, in, TL_T_CHAN), TL_FIELD(fz_relay, out, TL_T_CHAN),
    TL_FIELD(fz_relay, v, TL_T_VALUE), TL_FIELD(fz_relay, i, TL_T_I64),
    TL_FIELD(fz_relay, n, TL_T_I64),   TL_FIELD(fz_relay, until, TL_T_I64),
};

/* Sleeps until `until` (if set), then n times: receives on in (if any),
 * sends what it got on out (if any). */
static tl_status fz_relay_step(tl_frame *f, void *locals)
{
    fz_relay *L = locals;
    TL_BEGIN(f);
    if (L->until)
        TL_SLEEP_UNTIL(f, L->until);
    for (L->i = 0; fz_in_loop(L->i, L->n); L->i++) {
        if (L->in)
            TL_RECV(f, L->in, L->v);
        if (L->out)
            TL_SEND(f, L->out, L->v);
    }
    TL_RETURN(f, L->v);
    TL_END(f);
}
static const tl_func fz_relay_fn =
    FZ_FUNC("fz.relay", 1, fz_relay_step, fz_relay, fz_relay_fields, NULL);

#endif
