/* ring.h: a growable FIFO of object pointers (the engine's queue primitive).
 *
 * Not thread-safe by itself: the owner (a lane or the thread pool) guards it
 * with its own mutex. It never touches reference counts; whoever pushes hands
 * a reference to the ring and whoever pops takes it back. */
#ifndef OFFLOAD_RING_H
#define OFFLOAD_RING_H

#include <stddef.h>

typedef struct {
    void **slots;
    size_t cap;   /* power of two, or 0 before the first push */
    size_t head;  /* index of the oldest element */
    size_t len;
} ring;

void ring_init(ring *r);
/* Free the slot array; the elements must already be gone. */
void ring_free(ring *r);
/* Append; returns -1 when memory runs out (the ring is unchanged). */
int ring_push(ring *r, void *item);
/* Remove and return the oldest element, or NULL when empty. */
void *ring_pop(ring *r);

static inline size_t ring_len(const ring *r) { return r->len; }

#endif
