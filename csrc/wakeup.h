/* wakeup.h: a file descriptor that makes an event loop's selector return.
 *
 * eventfd on Linux (one fd, 8-byte counter), a non-blocking pipe elsewhere.
 * Producers call wakeup_signal() once per batch, never once per item. */
#ifndef OFFLOAD_WAKEUP_H
#define OFFLOAD_WAKEUP_H

typedef struct {
    int read_fd;
    int write_fd; /* == read_fd for eventfd */
} wakeup;

/* Returns 0, or -1 with errno set. */
int wakeup_open(wakeup *w);
void wakeup_close(wakeup *w);
/* Make read_fd readable. Safe from any thread, without the GIL. */
void wakeup_signal(wakeup *w);
/* Consume every pending signal so read_fd is quiet again. */
void wakeup_clear(wakeup *w);

#endif
