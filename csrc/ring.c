/* ring.c: the growable FIFO behind every engine queue (see ring.h). */
#include <stdlib.h>
#include <string.h>

#include <assert.h>

#include "ring.h"

void
ring_init(ring *r)
{
    r->slots = NULL;
    r->cap = r->head = r->len = 0;
}

void
ring_free(ring *r)
{
    free(r->slots);
    ring_init(r);
}

/* Double the capacity, unrolling the wrapped part so the ring starts at 0. */
static int
ring_grow(ring *r)
{
    size_t new_cap = r->cap ? r->cap * 2 : 64;
    void **slots = malloc(new_cap * sizeof(void *));
    if (slots == NULL) {
        return -1;
    }
    size_t first = r->cap - r->head;
    if (first > r->len) {
        first = r->len;
    }
    if (r->len) {
        memcpy(slots, r->slots + r->head, first * sizeof(void *));
        memcpy(slots + first, r->slots, (r->len - first) * sizeof(void *));
    }
    free(r->slots);
    r->slots = slots;
    r->cap = new_cap;
    r->head = 0;
    return 0;
}

int
ring_push(ring *r, void *item)
{
    if (r->len == r->cap && ring_grow(r) < 0) {
        return -1;
    }
    assert(r->len < r->cap && (r->cap & (r->cap - 1)) == 0 && r->head < r->cap);
    r->slots[(r->head + r->len) & (r->cap - 1)] = item;
    r->len++;
    return 0;
}

void *
ring_pop(ring *r)
{
    if (r->len == 0) {
        return NULL;
    }
    assert(r->len <= r->cap && r->head < r->cap);
    void *item = r->slots[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
    return item;
}
